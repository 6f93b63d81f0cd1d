"""golden bake: bake an image spec into the store (or return the cached build of the same inputs)."""

from __future__ import annotations

import argparse

from toolkit.bake import bake_image
from toolkit.cli.output import Context
from toolkit.core.progress import Progress, format_elapsed


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden bake` and its options."""
    p = sub.add_parser("bake", help="bake images/<image>.yaml into the store; unchanged inputs return the cached build")
    p.add_argument("image", help="image spec name (images/<image>.yaml)")
    p.add_argument("--force", action="store_true", help="rebuild even if a build of the same inputs exists")
    p.add_argument("--refresh", action="store_true",
                   help="re-resolve packages (nightly patching): advances the package snapshot, so a new build id")
    p.add_argument("--no-root-cache", action="store_true",
                   help="run every DIB phase even if the root before the roles is cached (the build id is the same)")
    p.set_defaults(func=cmd_bake, interrupted=(
        "bake interrupted: DIB was stopped, its mounts and partial build removed; nothing was stored "
        "(the run record says where it stopped)"))


def cmd_bake(args: argparse.Namespace, ctx: Context) -> int:
    """Bake one image and print its build id; unchanged inputs return the stored build."""
    settings = ctx.settings()
    with Progress(f"bake {args.image}", enabled=ctx.interactive, lines=ctx.log_lines) as progress:
        result = bake_image(settings, args.image, force=args.force, refresh=args.refresh,
                            root_cache=not args.no_root_cache, progress=progress)
    build = result.build
    if ctx.json:
        ctx.emit({
            "image": build.image,
            "build_id": build.build_id,
            "path": build.path,
            "cache_hit": result.cache_hit,
            "seconds": round(result.seconds, 2),
            "dib_seconds": None if result.dib_seconds is None else round(result.dib_seconds, 2),
            "builder": build.manifest.builder,
            "packer_seconds": None if result.packer_seconds is None else round(result.packer_seconds, 2),
            "run_id": result.run_id,
            "pre_role_root": result.pre_role_root,
            "artifacts": {k: v.model_dump() for k, v in build.manifest.artifacts.items()},
        })
        return 0
    how = "cache hit, nothing rebuilt" if result.cache_hit else f"baked in {format_elapsed(result.seconds)}"
    if result.pre_role_root:
        how += f" from cached pre-role root {result.pre_role_root}"
    ctx.say(f"{build.image} {build.build_id} ({how})")
    ctx.say(f"path: {build.path}")
    if result.run_dir:
        ctx.say(f"log:  {result.run_dir / 'stdout'}")
    ctx.table(["artifact", "size", "sha256"],
              [[n, f"{a.size:,}", a.sha256] for n, a in sorted(build.manifest.artifacts.items())])
    return 0
