"""golden hw [PATTERN]: each host's hardware as its agent last reported it; --history HOST; --accept."""

from __future__ import annotations

import argparse

from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context, when
from toolkit.core.errors import InputError
from toolkit.fleet.fleet import open_fleet
from toolkit.fleet.hwfacts import accept, hardware, history


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden hw` and its options."""
    p = sub.add_parser("hw", help="hardware per host (serial, CPUs, memory, disks, NICs) and unaccepted changes")
    p.add_argument("pattern", nargs="?", default="all", help="Ansible host pattern (default: all)")
    add_host_options(p)
    p.add_argument("--history", action="store_true",
                   help="every machine each selected host has been seen as (a row per change, not per boot)")
    p.add_argument("--accept", action="store_true",
                   help="accept the hosts' hardware change: clear hw-changed (needs --reason; audited)")
    p.add_argument("--reason", default="", help="why the change is expected (with --accept)")
    p.set_defaults(func=cmd_hw)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n} MiB"


def cmd_hw(args: argparse.Namespace, ctx: Context) -> int:
    """Show the selected hosts' hardware, one host's history, or accept their change."""
    if args.accept and not args.reason.strip():  # before the state database is opened: bad input changes nothing
        raise InputError("--accept needs --reason: say why the hardware change is expected")
    fleet = open_fleet(ctx.settings(), selection(args))
    if args.accept:
        cleared = accept(fleet, args.pattern, args.reason)
        if ctx.json:
            ctx.emit({"accepted": cleared})
        else:
            ctx.say(f"accepted the hardware change of {len(cleared)} host(s)" + "".join(f"\n  {h}" for h in cleared))
        return 0
    if args.history:
        rows = [r for h in hardware(fleet, args.pattern) for r in history(fleet, h.host)]
        if ctx.json:
            ctx.emit(rows)
        else:
            ctx.table(["HOST", "FIRST SEEN", "LAST SEEN", "BUILD", "CHANGES"],
                      [(r.host, when(r.first_seen), when(r.last_seen), r.build_id or "-",
                        "; ".join(r.changes) or "(first seen)") for r in rows])
        return 0
    found = hardware(fleet, args.pattern)
    if ctx.json:
        ctx.emit([{"host": h.host, "facts": h.facts, "hw_changed": list(h.changed),
                   "seen": h.summary.seen if h.summary else None} for h in found])
        return 0
    ctx.table(["HOST", "VENDOR", "MODEL", "SERIAL", "CPU", "MEMORY", "DISKS", "NICS", "SEEN", "CHANGED"], [
        (h.host, s.vendor or "-", s.model or "-", s.serial or "-", s.cpu, _mib(s.memory_mib), s.disks or "-",
         s.nics or "-", when(s.seen), "; ".join(h.changed) or "-") if (s := h.summary) else
        (h.host, "-", "-", "-", "-", "-", "-", "-", "never reported", "-") for h in found])
    return 0
