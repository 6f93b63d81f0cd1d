"""golden fleet: per host, rack, desired build, observed build, last report, state."""

from __future__ import annotations

import argparse

from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context, when
from toolkit.fleet.fleet import open_fleet
from toolkit.fleet.staleness import Staleness, check_policy, stale_policy
from toolkit.fleet.states import HostState
from toolkit.fleet.status import HostStatus, slot_summary


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden fleet` and its options."""
    p = sub.add_parser("fleet", help="hosts with their desired and observed builds")
    p.add_argument("pattern", nargs="?", default="all", help="Ansible host pattern (default: all)")
    add_host_options(p)
    p.add_argument("--state", choices=[s.value for s in HostState], help="only hosts in this state")
    p.add_argument("--unknown", action="store_true", help="list machines that asked to boot but are in no inventory")
    p.add_argument("--stale", action="store_true",
                   help="only hosts breaking the staleness policy (stale: in golden.yaml), with the reasons")
    p.add_argument("--hw-changed", action="store_true",
                   help="only hosts whose hardware changed since it was last accepted, with the change (golden hw)")
    p.set_defaults(func=cmd_fleet)



def cmd_fleet(args: argparse.Namespace, ctx: Context) -> int:
    """Show each selected host's desired and observed build and its state."""
    fleet = open_fleet(ctx.settings(), selection(args))
    if args.unknown:
        unknown = fleet.unknown_machines()
        if ctx.json:
            ctx.emit(unknown)
        else:
            ctx.table(["MAC", "FIRST SEEN", "LAST SEEN", "TIMES", "FROM"],
                      [(u.mac, when(u.first_seen), when(u.last_seen), u.seen_count, u.remote_addr) for u in unknown])
        return 0
    if args.stale:
        return _stale(fleet.staleness(args.pattern, check_policy(stale_policy(ctx.settings()))), ctx)
    hosts = [h for h in fleet.status(args.pattern) if (args.state is None or h.state == args.state)
             and (not args.hw_changed or h.hw_changed)]
    if ctx.json:
        ctx.emit(hosts)
        return 0
    if args.hw_changed:
        ctx.table(["HOST", "RACK", "STATE", "HARDWARE CHANGE"],
                  [(h.name, h.rack, h.state, "; ".join(h.hw_changed)) for h in hosts])
        return 0
    disk = any(slot_summary(h) for h in hosts)  # the SLOTS column only where disk hosts are listed
    ctx.table(["HOST", "RACK", "IMAGE", "DESIRED", "OBSERVED", "SINCE", "LAST REPORT", "STATE"]
              + (["SLOTS"] if disk else []), [
        (h.name, h.rack, h.image, h.desired or "-", _observed(h), when(h.observed_since),
         when(h.last_report), _state(h)) + ((slot_summary(h) or "-",) if disk else ())
        for h in hosts])
    return 0


def _state(h: HostStatus) -> str:
    if h.drift:
        return f"{h.state} ({len(h.drift)} drifted)"
    if h.state == HostState.FELL_BACK:
        return f"{h.state} ({h.fell_back})"  # the build whose boot failed
    return h.state


def _observed(h: HostStatus) -> str:
    """The verified build, and a newer report nothing vouches for beside it (never taken for the truth)."""
    return (h.observed or "-") + (f" ({h.unverified} unverified)" if h.unverified else "")


def _stale(found: list[Staleness], ctx: Context) -> int:
    violators = [s for s in found if s.stale]
    if ctx.json:
        ctx.emit(violators)
        return 0
    ctx.table(["HOST", "IMAGE", "RUNNING", "CURRENT", "AGE (DAYS)", "BEHIND", "PACKAGES", "SECURITY", "WHY"], [
        (s.host, f"{s.image}@{s.channel}" if s.channel else s.image, s.running or "-", s.current or "-",
         f"{s.age_s / 86400:.1f}" if s.age_s is not None else "-", s.builds_behind, len(s.packages_behind),
         len(s.security_behind), "; ".join(s.reasons)) for s in violators])
    return 0
