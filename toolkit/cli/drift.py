"""golden drift [PATTERN]: drifted hosts with their changed paths (added, modified, deleted), and logins."""

from __future__ import annotations

import argparse

from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context, when
from toolkit.fleet.fleet import open_fleet


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden drift` and its options."""
    p = sub.add_parser("drift", help="drifted hosts with the changed paths, first and last seen; --logins: logins")
    p.add_argument("pattern", nargs="?", default="all", help="Ansible host pattern (default: all)")
    add_host_options(p)
    p.add_argument("--logins", action="store_true",
                   help="the logins the agents reported instead (who, when, from where, which certificate)")
    p.set_defaults(func=cmd_drift)



def cmd_drift(args: argparse.Namespace, ctx: Context) -> int:
    """List drifted hosts with their changed paths (or, with --logins, the logins seen)."""
    fleet = open_fleet(ctx.settings(), selection(args))
    if args.logins:
        logins = fleet.logins(args.pattern)
        if ctx.json:
            ctx.emit(logins)
            return 0
        ctx.table(["HOST", "AT", "USER", "FROM", "METHOD", "SERIAL", "GRANT", "LINE"], [
            (x.host, x.at, x.user, x.from_addr, x.method, x.serial if x.serial is not None else "-",
             x.grant_id if x.grant_id is not None else "NONE (tainted)", x.line[:80]) for x in logins])
        return 0
    rows = fleet.drift(args.pattern)
    if ctx.json:
        ctx.emit(rows)
        return 0
    ctx.table(["HOST", "KIND", "PATH", "BUILD", "FIRST SEEN", "LAST SEEN"],
              [(r.host, r.kind, r.path, r.build_id, when(r.first_seen), when(r.last_seen)) for r in rows])
    return 0
