"""golden validate: check every image spec and role."""

from __future__ import annotations

import argparse

from toolkit.cli.output import Context
from toolkit.core.errors import SpecError
from toolkit.image.spec import spec_files, validate_all
from toolkit.rollout.hooks import load_hooks


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden validate` and its options."""
    p = sub.add_parser("validate", help="check every image spec and role; exit 2 on any problem")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace, ctx: Context) -> int:
    """Check every image spec, role and golden.yaml key; exit 2 on any problem."""
    settings = ctx.settings()
    problems = validate_all(settings.images_dir, settings.roles_dir)
    if problems:
        raise SpecError(problems)
    hooks = load_hooks(settings.extra.get("rollout"), settings.project)  # golden.yaml's rollout: section
    specs = [p.stem for p in spec_files(settings.images_dir)]
    if ctx.json:
        ctx.emit({"ok": True, "images": specs, "hooks": len(hooks)})
    else:
        ctx.say(f"ok: {len(specs)} image spec(s) valid: {', '.join(specs)}"
                + (f"; {len(hooks)} rollout hook(s) valid" if hooks else ""))
    return 0
