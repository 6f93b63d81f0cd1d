"""golden role lint: yamllint and ansible-lint over roles and their Molecule scenarios.

Both tools read the project's committed configs (``.yamllint``, ``.ansible-lint``: the
``production`` profile, offline of Galaxy). Their own output is what the user sees; this module
only picks the paths, runs both (a yamllint failure does not hide ansible-lint's findings) and
turns a failure into one error naming the tools that failed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.errors import InputError, ToolMissingError
from toolkit.core.run import base_env, run, which

SHARED_SCENARIO = "shared"  # molecule/shared: create/destroy used by every scenario


class RoleLintError(InputError):
    """A linter found problems in a role or its scenario (the role is the input that is wrong)."""


@dataclass(frozen=True)
class LintResult:
    """What ``golden role lint`` checked, with which tools."""
    roles: tuple[str, ...]
    paths: tuple[str, ...]
    tools: tuple[str, ...]


def known_roles(project: Path) -> list[str]:
    """The project's roles (folders with tasks/main.yml)."""
    roles = project / "roles"
    return sorted(p.name for p in roles.iterdir() if (p / "tasks" / "main.yml").is_file()) if roles.is_dir() else []


def require_role(project: Path, name: str) -> None:
    """InputError naming the known roles unless ``name`` is one."""
    if name not in known_roles(project):
        known = ", ".join(known_roles(project)) or "none"
        raise InputError(f"no role named {name!r} in {project / 'roles'} (known roles: {known})",
                         hint=f"create it with: golden role new {name}")


def lint_paths(project: Path, names: list[str]) -> list[str]:
    """Project-relative paths to lint: each role, its scenario, and the shared create/destroy."""
    paths = []
    for name in names:
        require_role(project, name)
        paths.append(f"roles/{name}")
        if (project / "molecule" / name).is_dir():
            paths.append(f"molecule/{name}")
    if (project / "molecule" / SHARED_SCENARIO).is_dir():
        paths.append(f"molecule/{SHARED_SCENARIO}")
    return paths


def tool_env(project: Path, *, color: bool = True) -> dict[str, str]:
    """Environment for Ansible tools: our venv first on PATH (molecule and ansible-lint call
    ansible-playbook and ansible-config), the project's roles on the roles path."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}:{base_env()['PATH']}",
        "ANSIBLE_ROLES_PATH": str(project / "roles"),
    }
    if not color:
        env |= {"NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0"}
    return env


def tool_path(name: str) -> str:
    """A developer tool from our own venv (where the ``dev`` extras put it), else from PATH."""
    venv_tool = Path(sys.executable).with_name(name)
    found = str(venv_tool) if venv_tool.exists() else which(name)
    if not found:
        raise ToolMissingError(f"{name} not found.", hint="install the dev extras: scripts/bootstrap")
    return found


def lint_roles(project: Path, names: list[str] | None = None, *, log_path: Path | None = None) -> LintResult:
    """Run yamllint and ansible-lint on ``names`` (default: every role); raise RoleLintError on findings.

    Output goes to the terminal, or into ``log_path`` when given (``--json``)."""
    roles = names or known_roles(project)
    paths = lint_paths(project, roles)
    env = tool_env(project, color=log_path is None and sys.stdout.isatty())
    commands = {
        "yamllint": [tool_path("yamllint"), "--strict", *paths],
        "ansible-lint": [tool_path("ansible-lint"), *([] if sys.stdout.isatty() else ["--nocolor"]), *paths],
    }
    failed = []
    for tool, cmd in commands.items():
        result = run(cmd, env=env, cwd=project, check=False, log_path=log_path)
        if result.returncode != 0:
            failed.append(tool)
    if failed:
        raise RoleLintError(
            f"{' and '.join(failed)} found problems in {', '.join(paths)}"
            + (f" (full output in {log_path})" if log_path else " (their output is above)"),
            hint="fix what they report; skip a rule only with a noqa and a comment saying why",
        )
    return LintResult(roles=tuple(roles), paths=tuple(paths), tools=tuple(commands))

