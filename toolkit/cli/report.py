"""golden report --out fleet.html: the fleet page as one self-contained HTML file (opens offline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context
from toolkit.core.errors import InputError
from toolkit.core.fsutil import atomic_write
from toolkit.fleet.fleet import open_fleet
from toolkit.fleet.page import render_page
from toolkit.fleet.staleness import stale_policy


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden report` and its options."""
    p = sub.add_parser("report", help="write the fleet page: hosts by rack coloured by state, channels, runs")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the HTML file to write, e.g. fleet.html")
    add_host_options(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace, ctx: Context) -> int:
    """Write the fleet page (HTML) to a file."""
    settings = ctx.settings()
    out: Path = args.out
    if out.is_dir() or not out.parent.is_dir():
        raise InputError(f"--out {out}: expected a file in an existing folder")
    page = open_fleet(settings, selection(args)).page(stale_policy(settings))
    atomic_write(out, render_page(page))
    if ctx.json:
        ctx.emit({"out": str(out), "hosts": len(page.hosts)})
    else:
        ctx.say(f"wrote {out}: {len(page.hosts)} host(s)")
    return 0
