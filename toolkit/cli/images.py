"""golden images (builds, channels, history) and golden gc (retention)."""

from __future__ import annotations

import argparse
import time
from datetime import datetime

from toolkit.cli.argtypes import int_range
from toolkit.cli.output import Context, when
from toolkit.fleet.fleet import open_fleet
from toolkit.state import open_state
from toolkit.store import open_store
from toolkit.store.channels import history
from toolkit.store.gc import gc
from toolkit.store.overview import summarize_images


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden images` and `golden gc` and their options."""
    p = sub.add_parser("images", help="images, their builds (age, size, checks) and channels")
    p.add_argument("--history", metavar="IMAGE", nargs="?", const="", default=None,
                   help="show the audit history of channel changes (of one image, or all)")
    p.add_argument("--channel", help="with --history: only this channel")
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("gc", help="delete old builds nothing references")
    p.add_argument("--keep", type=int_range(0, 1_000_000), required=True, metavar="N",
                   help="keep the N newest builds of each image")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
    p.add_argument("-i", "--inventory", action="append",
                   help="inventory whose pinned builds are kept, repeatable (default: GOLDEN_INVENTORY)")
    p.set_defaults(func=cmd_gc, interrupted=(
        "gc interrupted: builds deleted so far are gone, the rest are untouched; run it again to finish"))


def human_size(n: int) -> str:
    """``512 B``, ``1.5 MiB``: bytes in binary units."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_age(seconds: float) -> str:
    """``90s``, ``5m``, ``3h``, ``2d``: seconds under 2 min, minutes under 2 h, hours under 2 days, then days."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _age(iso: str) -> str:
    try:
        return human_age(time.time() - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return "?"


def cmd_images(args: argparse.Namespace, ctx: Context) -> int:
    """List images with their builds (age, size, checks) and channels."""
    s = ctx.settings()
    db = open_state(s)
    if args.history is not None:
        entries = history(db, args.history or None, args.channel)
        if ctx.json:
            ctx.emit(entries)
            return 0
        ctx.table(["WHEN", "IMAGE", "CHANNEL", "ACTION", "FROM", "TO", "WHO", "WHY"], [
            (when(e.at), e.image, e.channel,
             e.action + (" (forced)" if e.forced else ""), e.from_build or "-", e.to_build, e.user, e.reason)
            for e in entries])
        return 0
    summaries = summarize_images(db, open_store(s))
    if ctx.json:
        ctx.emit(summaries)
        return 0
    rows = []
    for im in summaries:
        if not im.builds:
            rows.append((im.image, "(no builds)", "", "", "", ", ".join(f"{c}={b}" for c, b in im.channels.items())))
        for b in im.builds:
            rows.append((im.image, b.build_id, _age(b.created_at), human_size(b.size),
                         "passed" if b.checks_passed else "NOT PASSED", ", ".join(b.channels)))
    ctx.table(["IMAGE", "BUILD", "AGE", "SIZE", "CHECKS", "CHANNELS"], rows)
    return 0


def cmd_gc(args: argparse.Namespace, ctx: Context) -> int:
    """Delete all but the N newest builds of each image, keeping any a channel or the inventory references."""
    s = ctx.settings()
    fleet = open_fleet(s, args.inventory, required=False)
    plan = gc(fleet.db, fleet.store, args.keep, dry_run=args.dry_run, extra_refs=fleet.inventory_refs())
    if ctx.json:
        ctx.emit({"dry_run": args.dry_run, **vars(plan)})
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for item in plan.delete:
        ctx.say(f"{verb} {item.image}/{item.build_id}")
    for item in plan.keep:
        ctx.say(f"kept {item.image}/{item.build_id}: {'; '.join(item.reasons)}")
    ctx.say(f"{verb} {len(plan.delete)} build(s), {human_size(plan.freed_bytes)}; kept {len(plan.keep)}")
    return 0
