"""golden state migrate --to postgresql://...: move one machine's SQLite state into PostgreSQL."""

from __future__ import annotations

import argparse

from toolkit.cli.output import Context
from toolkit.state import migrate_to_postgres


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden state migrate` and its options."""
    p = sub.add_parser("state", help="the state database: copy SQLite state into PostgreSQL")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    m = actions.add_parser("migrate", help="copy this home's SQLite state into an empty PostgreSQL database")
    m.add_argument("--to", metavar="URL",
                   help="postgresql://user@host/db (default: state_url / GOLDEN_STATE_URL; no password here: "
                        "use ~/.pgpass or PGPASSWORD)")
    m.set_defaults(func=cmd_migrate, interrupted="golden state migrate: interrupted; the copy is one "
                                                 "transaction, so the target is unchanged")


def cmd_migrate(args: argparse.Namespace, ctx: Context) -> int:
    """Copy this home's SQLite state into an empty PostgreSQL database."""
    result = migrate_to_postgres(ctx.settings(), args.to)
    if ctx.json:
        ctx.emit(result)
        return 0
    total = sum(result.rows.values())
    ctx.say(f"copied {total} rows from {result.source} into {result.target} (one transaction)")
    ctx.table(["table", "rows"], [[t, n] for t, n in result.rows.items()])
    ctx.say("next: set state_url in golden.yaml (or GOLDEN_STATE_URL) so every verb uses it")
    return 0
