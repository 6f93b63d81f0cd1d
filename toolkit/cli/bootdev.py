"""golden bootdev: choose the next boot device (network or disk) through the BMCs."""

from __future__ import annotations

import argparse

from toolkit.bmc.base import BootDevice
from toolkit.cli.argtypes import int_range
from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context
from toolkit.cli.power import render_report
from toolkit.fleet.power import bootdev_pattern


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden bootdev` and its options."""
    p = sub.add_parser("bootdev", help="set the next boot device (pxe or disk) of the hosts a pattern selects")
    p.add_argument("pattern", help="host pattern: all, a group (rack), a host, globs, a:b, a:&b, a:!b")
    p.add_argument("device", choices=[d.value for d in BootDevice])
    p.add_argument("--persistent", action="store_true", help="keep the setting for every boot, not only the next")
    add_host_options(p)
    p.add_argument("--workers", type=int_range(1, 256), default=16,
                   help="BMCs talked to at once (worker processes; default 16)")
    p.set_defaults(func=cmd_bootdev, interrupted=(
        "bootdev interrupted: some BMCs may have received the command; read it back with golden power "
        "PATTERN status"))


def cmd_bootdev(args: argparse.Namespace, ctx: Context) -> int:
    """Set the next boot device of the selected hosts through their BMCs, one line per host."""
    report = bootdev_pattern(ctx.settings(), selection(args), args.pattern, BootDevice(args.device),
                             persistent=args.persistent, workers=args.workers)
    return render_report(report, ctx, "BOOTDEV", "bootdev")
