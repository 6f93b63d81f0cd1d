"""golden role test: lint a role, then run its Molecule scenario in a copy of the cached chroot.

The scenario is Molecule's own (``molecule test -s NAME``: destroy, syntax, create, converge,
idempotence, verify, destroy) and its output is shown as Molecule prints it. What this adds: lint
first, the base chroot built once per machine before Molecule starts (so its create step finds it),
a copy path of our choosing so ``--keep`` can name it, and cleanup of that copy when Molecule dies
half-way.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.errors import GoldenError, InputError
from toolkit.core.run import run
from toolkit.role.chroot import cache_dir, ensure_chroot, remove_tree
from toolkit.role.lint import lint_roles, require_role, tool_env, tool_path


class RoleTestError(GoldenError):
    """The role's Molecule scenario failed (converge, idempotence or verify)."""


@dataclass(frozen=True)
class RoleTestResult:
    """A ``golden role test`` run: the role, its time and the chroot it used."""
    role: str
    seconds: float
    base_chroot: Path
    kept: Path | None
    log: Path | None


def instance_path(project: Path, role: str) -> Path:
    """Where the scenario's throwaway chroot copy goes: per project and role, outside the project
    (a kept chroot inside it would be walked by every linter and search)."""
    key = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "molecule" / f"{project.name}-{key}" / role / "chroot"


def _prune_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents below ``stop`` while they are empty."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (another role's copy, a kept chroot) or already gone
            return
        folder = folder.parent


def molecule_command(role: str, *, keep: bool, debug: bool) -> list[str]:
    """The molecule command that tests ``role``."""
    return [
        tool_path("molecule"), *(["--debug"] if debug else []),
        "test", "-s", role, *(["--destroy", "never"] if keep else []),
    ]


def run_role_test(project: Path, role: str, *, keep: bool = False, debug: bool = False,
              log_path: Path | None = None) -> RoleTestResult:
    """Lint ``role``, then ``molecule test`` it; raise RoleLintError or RoleTestError on failure."""
    require_role(project, role)
    if not (project / "molecule" / role / "molecule.yml").is_file():
        raise InputError(f"role {role!r} has no Molecule scenario (molecule/{role}/molecule.yml)",
                         hint="golden role new scaffolds one; copy molecule/web/ for an existing role")
    started = time.monotonic()
    lint_roles(project, [role], log_path=log_path)
    base = ensure_chroot()
    copy = instance_path(project, role)
    color = log_path is None and sys.stdout.isatty()
    env = tool_env(project, color=color) | {"GOLDEN_MOLECULE_CHROOT": str(copy)}
    try:
        result = run(molecule_command(role, keep=keep, debug=debug), env=env, cwd=project, check=False,
                     log_path=log_path)
    finally:
        if not keep:
            remove_tree(copy)  # Molecule's destroy did it, unless Molecule died before reaching it
            _prune_empty(copy.parent, stop=cache_dir() / "molecule")
    if result.returncode != 0:
        raise RoleTestError(
            f"molecule test -s {role} failed (exit {result.returncode})"
            + (f"; full output in {log_path}" if log_path else "; its output is above"),
            hint=f"the converged chroot is kept at {copy}" if keep else "--keep leaves the chroot for inspection",
        )
    return RoleTestResult(role=role, seconds=round(time.monotonic() - started, 1), base_chroot=base,
                          kept=copy if keep else None, log=log_path)

