"""golden break-glass HOST: a short-lived SSH certificate for one host, audited, tainting it; --list: the grants."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from toolkit.access.breakglass import DEFAULT_PRINCIPAL, PERMITS, grant, list_grants, plan_grant
from toolkit.cli.argtypes import duration
from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context, when
from toolkit.core.duration import format_duration
from toolkit.core.errors import InputError
from toolkit.fleet.fleet import open_fleet
from toolkit.store.channels import current_user


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden break-glass` and its options."""
    p = sub.add_parser("break-glass", help="sign your SSH key for one host and a short time (taints the host); "
                                           "--list: the grants")
    p.add_argument("host", nargs="?", help="inventory host name (with --list: only this host's grants)")
    p.add_argument("--list", action="store_true", help="list active and past grants instead of granting one")
    p.add_argument("--reason", help="why (recorded in the audit history and the taint); needed to grant")
    p.add_argument("--ttl", type=duration(1, 24 * 3600), metavar="DURATION",
                   help="how long the certificate is valid, e.g. 30m or 1h (at most 1d); needed to grant")
    p.add_argument("--pubkey", type=Path, metavar="FILE", help="your SSH public key (.pub); needed to grant")
    p.add_argument("--principal", default=DEFAULT_PRINCIPAL,
                   help=f"principal base the node accepts as PRINCIPAL@MAC ({DEFAULT_PRINCIPAL})")
    p.add_argument("--out", type=Path, metavar="FILE", help="where to write the certificate (FILE-cert.pub beside it)")
    p.add_argument("--permit", action="append", default=[], choices=PERMITS,
                   help="also allow this (repeatable); the certificate otherwise permits a terminal only")
    add_host_options(p, list_hosts=False)
    p.set_defaults(func=cmd_break_glass)


def cmd_break_glass(args: argparse.Namespace, ctx: Context) -> int:
    """Sign the operator's SSH key for one host and a short time, and taint the host."""
    if args.list:
        return cmd_list(args, ctx)
    missing = [name for name, value in (("HOST", args.host), ("--reason", args.reason), ("--ttl", args.ttl),
                                        ("--pubkey", args.pubkey)) if value is None]
    if missing:
        raise InputError(f"break-glass needs {', '.join(missing)} to grant", hint="or pass --list to see the grants")
    settings = ctx.settings()
    fleet = open_fleet(settings, selection(args))
    plan = plan_grant(fleet, args.host, current_user(), args.reason, args.ttl, args.pubkey, args.principal, args.out,
                      tuple(args.permit))
    done = grant(fleet, settings.home, plan)
    g = done.grant
    if ctx.json:
        ctx.emit({"grant": g, "certificate": str(done.certificate), "ca_public_key": done.ca_public_key})
        return 0
    ctx.say(f"break-glass grant {g.id} for {g.host}: principal {g.principal}, valid {format_duration(plan.ttl_s)} "
            f"until {when(g.expires_at)}")
    ctx.say(f"certificate: {done.certificate} (ssh -i <your key> root@{g.host})")
    ctx.say(f"{g.host} is now tainted: it stays so until it is reimaged")
    return 0


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    """List the break-glass certificates issued, newest first."""
    grants = list_grants(open_fleet(ctx.settings(), selection(args), required=False), args.host)
    if ctx.json:
        ctx.emit(grants)
        return 0
    now = time.time()
    ctx.table(["SERIAL", "HOST", "USER", "ISSUED", "EXPIRES", "STATUS", "PRINCIPAL", "REASON"], [
        (g.id, g.host, g.user, when(g.issued_at), when(g.expires_at), "active" if g.active(now) else "expired",
         g.principal, g.reason[:60]) for g in grants])
    return 0
