"""golden power: read or change power state of inventory hosts through their BMCs."""

from __future__ import annotations

import argparse

from toolkit.bmc.base import PowerAction
from toolkit.bmc.control import FanoutReport
from toolkit.cli.argtypes import int_range
from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context
from toolkit.fleet.power import power_pattern


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden power` and its options."""
    p = sub.add_parser("power", help="power status|on|off|cycle for the hosts an Ansible host pattern selects")
    p.add_argument("pattern", help="host pattern: all, a group (rack), a host, globs, a:b, a:&b, a:!b")
    p.add_argument("action", choices=[a.value for a in PowerAction if a != PowerAction.RESET])
    add_host_options(p)
    p.add_argument("--workers", type=int_range(1, 256), default=16,
                   help="BMCs talked to at once (worker processes; default 16)")
    p.set_defaults(func=cmd_power, interrupted=(
        "power interrupted: some BMCs may have received the command; check with: golden power PATTERN "
        "status"))


def render_report(report: FanoutReport, ctx: Context, value_header: str, value_field: str) -> int:
    """Show a fan-out BMC command's results; 0 when every host succeeded, else 1."""
    if ctx.json:
        ctx.emit(report)
    else:
        rows = [(r.host, getattr(r, value_field) or "-", "ok" if r.ok else r.error, r.attempts, r.message or "")
                for r in report.results]
        ctx.table(("HOST", value_header, "RESULT", "TRIES", "MESSAGE"), rows)
        ok = len(report.results) - len(report.failed)
        ctx.say(f"{report.action}: {ok}/{len(report.results)} ok in {report.seconds:.1f} s")
    return 0 if report.ok else 1


def cmd_power(args: argparse.Namespace, ctx: Context) -> int:
    """Query or change the power state of the selected hosts through their BMCs."""
    report = power_pattern(ctx.settings(), selection(args), args.pattern, PowerAction(args.action),
                           workers=args.workers)
    return render_report(report, ctx, "POWER", "power")
