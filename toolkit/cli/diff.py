"""golden diff A B: what changed between two builds (packages with versions and archives, roles, spec)."""

from __future__ import annotations

import argparse

from toolkit.cli.output import Context
from toolkit.image.diff import diff_manifests
from toolkit.state import open_state
from toolkit.store import open_store
from toolkit.store.channels import resolve_ref


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden diff` and its options."""
    p = sub.add_parser("diff", help="what changed between two builds: packages (security first), roles, spec")
    p.add_argument("old", metavar="A", help="name@channel, name@build-id or a build id")
    p.add_argument("new", metavar="B", help="name@channel, name@build-id or a build id")
    p.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace, ctx: Context) -> int:
    """Show what changed between two builds: packages (security first), roles and spec."""
    s = ctx.settings()
    db, store = open_state(s), open_store(s)
    d = diff_manifests(resolve_ref(db, store, args.old).manifest, resolve_ref(db, store, args.new).manifest)
    if ctx.json:
        ctx.emit({"old": d.old, "new": d.new, "packages": d.packages, "roles": d.roles, "spec": d.spec,
                  "inputs": d.inputs, "security_updates": len(d.security_updates)})
        return 0
    ctx.say(f"{d.old} -> {d.new}: {len(d.packages)} package change(s), {len(d.security_updates)} security "
            f"update(s), {len(d.roles)} role change(s)" + (f", spec: {', '.join(d.spec)}" if d.spec else ""))
    if d.packages:
        ctx.table(["PACKAGE", "CHANGE", "OLD", "NEW", "ARCHIVE", ""],
                  [(p.package, p.change.value, p.old or "-", p.new or "-", p.archive or "?",
                    "SECURITY" if p.security else "") for p in d.packages])
    for r in d.roles:
        ctx.say(f"role {r.role}: {r.change}")
    if d.inputs:
        ctx.say(f"other inputs changed: {', '.join(d.inputs)}")
    return 0
