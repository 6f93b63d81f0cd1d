"""golden role new|lint|test: the role developer's loop (scaffold, lint, Molecule in a chroot)."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.cli.output import Context
from toolkit.role.lint import lint_roles
from toolkit.role.scaffold import new_role
from toolkit.role.scenario import run_role_test


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden role new|lint|test` and their options."""
    p = sub.add_parser("role", help="scaffold, lint and test bake-time roles")
    verbs = p.add_subparsers(dest="role_command", metavar="VERB")
    verbs.required = True

    new = verbs.add_parser("new", help="scaffold roles/NAME and its Molecule scenario molecule/NAME")
    new.add_argument("name")
    new.set_defaults(func=cmd_new)

    lint = verbs.add_parser("lint", help="yamllint and ansible-lint on roles and their scenarios; exit 2 on findings")
    lint.add_argument("names", nargs="*", metavar="NAME", help="roles to lint (default: all)")
    lint.set_defaults(func=cmd_lint)

    # --debug (a global option, accepted after the verb too) also runs molecule --debug.
    test = verbs.add_parser("test", help="lint NAME, then molecule test it in a copy of the cached chroot")
    test.add_argument("name")
    test.add_argument("--keep", action="store_true", help="leave the converged chroot for inspection")
    test.set_defaults(func=cmd_test)


def _log(ctx: Context, settings_home: Path, what: str) -> Path | None:
    # --json keeps stdout for the document: the tools' own output goes to a log file instead.
    if not ctx.json:
        return None
    folder = settings_home / "runs" / "role"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{what}.log"


def cmd_new(args: argparse.Namespace, ctx: Context) -> int:
    """Scaffold a role and its Molecule scenario."""
    settings = ctx.settings()
    made = new_role(settings.require_project(), args.name)
    if ctx.json:
        ctx.emit(made)
    else:
        ctx.say("\n".join(f"created {f}" for f in made.files))
        ctx.say(f"next: edit roles/{made.name}/, then golden role test {made.name}")
    return 0


def cmd_lint(args: argparse.Namespace, ctx: Context) -> int:
    """Lint roles and their scenarios; exit 2 on findings."""
    settings = ctx.settings()
    result = lint_roles(settings.require_project(), args.names or None, log_path=_log(ctx, settings.home, "lint"))
    if ctx.json:
        ctx.emit(result)
    else:
        ctx.say(f"ok: {', '.join(result.tools)} clean on {', '.join(result.paths)}")
    return 0


def cmd_test(args: argparse.Namespace, ctx: Context) -> int:
    """Lint a role, then run its Molecule scenario in a copy of the cached chroot."""
    settings = ctx.settings()
    result = run_role_test(settings.require_project(), args.name, keep=args.keep, debug=bool(args.debug),
                           log_path=_log(ctx, settings.home, f"test-{args.name}"))
    if ctx.json:
        ctx.emit(result)
        return 0
    ctx.say(f"ok: role {result.role} passed lint and molecule test in {result.seconds:.0f} s")
    if result.kept:
        ctx.say(f"kept: the converged chroot is at {result.kept} (the next golden role test {result.role} removes it)")
    return 0
