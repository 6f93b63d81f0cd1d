"""golden console HOST: the host's serial console over its BMC's Serial-over-LAN (interactive, or --follow/--log)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from toolkit.cli.argtypes import duration
from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context
from toolkit.fleet.console import MAX_SECONDS, plan_console, run_console
from toolkit.fleet.fleet import open_fleet
from toolkit.store.channels import current_user


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden console` and its options."""
    p = sub.add_parser("console", help="a host's serial console over IPMI Serial-over-LAN (interactive taints the "
                                       "host; --follow watches)")
    p.add_argument("host", help="inventory host name")
    p.add_argument("--follow", action="store_true",
                   help="print what the console shows until Ctrl-C (or --seconds); types nothing, taints nothing")
    p.add_argument("--log", type=Path, metavar="FILE",
                   help="append what the console shows to FILE (without --follow: only there, not on the screen)")
    p.add_argument("--seconds", type=duration(1, MAX_SECONDS), metavar="DURATION",
                   help="with --follow or --log: stop after this long, e.g. 90 or 5m")
    p.add_argument("--force", action="store_true",
                   help="take over an SOL session another client holds (a reimage's capture, an ipmitool)")
    p.add_argument("--reason", default="", help="why (recorded in the audit history, and in the taint)")
    p.add_argument("--escape", default="~", metavar="CHAR",
                   help="interactive: the escape character; CHAR then '.' at a line start leaves (default ~)")
    add_host_options(p, list_hosts=False)
    p.set_defaults(func=cmd_console, interrupted="console interrupted: the SOL session was closed")


def cmd_console(args: argparse.Namespace, ctx: Context) -> int:
    """Open the host's console as planned; say how it ended on stderr."""
    fleet = open_fleet(ctx.settings(), selection(args))
    plan = plan_console(fleet, args.host, follow=args.follow, log=args.log, seconds=args.seconds,
                        terminal=sys.stdin.isatty() and sys.stdout.isatty(), force=args.force,
                        reason=args.reason, escape=args.escape, to_output=not ctx.json)
    result = run_console(fleet, plan, current_user(), on_open=lambda text: print(text, file=sys.stderr))
    if ctx.json:
        ctx.emit(result)
    else:
        print(f"\r\n[console of {result.host} closed ({result.ended}): {result.bytes} bytes in "
              f"{result.seconds:.0f} s]", file=sys.stderr)
    return 0
