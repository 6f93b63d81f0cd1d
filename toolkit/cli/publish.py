"""golden publish / promote / rollback: move a channel to an exact build id, recorded in the audit history."""

from __future__ import annotations

import argparse

from toolkit.cli.output import Context
from toolkit.fleet.fleet import open_fleet
from toolkit.state import open_state
from toolkit.store import open_store
from toolkit.store.channels import LATEST, ChangeResult, promote, publish, rollback
from toolkit.store.policy import parse_policy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="point a channel of an image at a build")
    p.add_argument("image", help="image name (images/<name>.yaml)")
    p.add_argument("build", metavar="BUILD", help=f"a build id in the store, or {LATEST} for the newest bake")
    p.add_argument("--channel", required=True, help="channel to point at the build, e.g. dev")
    p.add_argument("--force", action="store_true",
                   help="publish to a channel hosts follow even though the build's checks have not passed")
    p.add_argument("--reason", default="", help="why (required with --force; recorded in the history)")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="publish a build that carries no signature although this home trusts signing keys")
    p.add_argument("-i", "--inventory", action="append",
                   help="inventory whose hosts follow channels, repeatable (default: as for every verb)")
    p.set_defaults(func=cmd_publish, interrupted=(
        "publish interrupted: its transaction was rolled back; the channel is unchanged"))

    p = sub.add_parser("promote", help="give a channel the exact build another channel points at")
    p.add_argument("image")
    p.add_argument("--from", dest="src", required=True, metavar="CHANNEL", help="source channel, e.g. dev")
    p.add_argument("--to", dest="dst", required=True, metavar="CHANNEL", help="target channel, e.g. staging")
    p.add_argument("--force", action="store_true", help="promote even though the build's checks have not passed")
    p.add_argument("--reason", default="", help="why (required with --force; recorded in the history)")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="promote a build that carries no signature although this home trusts signing keys")
    p.set_defaults(func=cmd_promote, interrupted=(
        "promote interrupted: its transaction was rolled back; the channel is unchanged"))

    p = sub.add_parser("rollback", help="point a channel back at its previous build")
    p.add_argument("image")
    p.add_argument("--channel", required=True)
    p.add_argument("--reason", default="", help="why (recorded in the history)")
    p.set_defaults(func=cmd_rollback, interrupted=(
        "rollback interrupted: its transaction was rolled back; the channel is unchanged"))


def _render(ctx: Context, result: ChangeResult) -> int:
    c = result.change
    if ctx.json:
        ctx.emit({"applied": result.applied, "history_id": result.history_id, "at": result.at, **vars(c)})
    elif not result.applied:
        ctx.say(f"{c.image}@{c.channel} already points at {c.to_build}; nothing changed")
    else:
        forced = " (FORCED past failing checks)" if c.forced else ""
        ctx.say(f"{c.action}: {c.image}@{c.channel}: {c.from_build or '(none)'} -> {c.to_build}{forced}")
    return 0


def cmd_publish(args: argparse.Namespace, ctx: Context) -> int:
    fleet = open_fleet(ctx.settings(), args.inventory, required=False)
    return _render(ctx, publish(fleet.db, fleet.store, args.image, args.build, args.channel, reason=args.reason,
                                followers=fleet.followers(args.image, args.channel), force=args.force,
                                allow_unsigned=args.allow_unsigned))


def cmd_promote(args: argparse.Namespace, ctx: Context) -> int:
    s = ctx.settings()
    return _render(ctx, promote(open_state(s), open_store(s), args.image, args.src, args.dst,
                                force=args.force, reason=args.reason, policy=parse_policy(s.extra.get("promotion")),
                                allow_unsigned=args.allow_unsigned))


def cmd_rollback(args: argparse.Namespace, ctx: Context) -> int:
    s = ctx.settings()
    return _render(ctx, rollback(open_state(s), open_store(s), args.image, args.channel, reason=args.reason))
