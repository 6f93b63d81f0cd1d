"""golden role new: a role and its Molecule scenario that pass lint and ``golden role test`` as made.

The files come from ``templates/`` (package data). They are Ansible YAML and Jinja themselves, so
the role name goes in by plain replacement of ``__ROLE__`` rather than by a template engine that
would fight over ``{{ }}``. Both folders are written aside and renamed into place: a failed
scaffold leaves nothing half-made.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.errors import InputError

TEMPLATES = Path(__file__).resolve().parent / "templates"
PLACEHOLDER = "__ROLE__"
# Ansible's own rule for role names (ansible-lint role-name), bounded like our image names.
ROLE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RESERVED = frozenset({"shared"})  # molecule/shared holds every scenario's create and destroy

# (path made, relative to the project; template it is made from)
FILES = (
    ("roles/{name}/tasks/main.yml", "tasks-main.yml"),
    ("roles/{name}/defaults/main.yml", "defaults-main.yml"),
    ("roles/{name}/templates/{name}.conf.j2", "conf.j2"),
    ("roles/{name}/meta/main.yml", "meta-main.yml"),
    ("roles/{name}/meta/argument_specs.yml", "meta-argument_specs.yml"),
    ("roles/{name}/README.md", "README.md"),
    ("molecule/{name}/molecule.yml", "molecule.yml"),
    ("molecule/{name}/converge.yml", "converge.yml"),
    ("molecule/{name}/verify.yml", "verify.yml"),
)


@dataclass(frozen=True)
class NewRole:
    """A role ``golden role new`` made, and its files."""
    name: str
    files: tuple[str, ...]


def check_name(name: str, project: Path) -> None:
    """InputError unless ``name`` is a free, valid role name."""
    if not ROLE_NAME_RE.match(name) or name in RESERVED:
        raise InputError(f"role name {name!r} is not allowed",
                         hint="use a lowercase letter, then lowercase letters, digits or _ (at most 63), not 'shared'")
    for folder in (project / "roles" / name, project / "molecule" / name):
        if folder.exists():
            raise InputError(f"{folder} already exists; golden role new never overwrites a role",
                             hint="pick another name, or edit the existing role")


def render(template: str, name: str) -> str:
    """Template ``template`` with the role's name filled in."""
    return (TEMPLATES / template).read_text(encoding="utf-8").replace(PLACEHOLDER, name)


def new_role(project: Path, name: str) -> NewRole:
    """Scaffold ``roles/NAME`` and ``molecule/NAME``; raise InputError on a bad or taken name."""
    check_name(name, project)
    made = [(rel.format(name=name), template) for rel, template in FILES]
    with tempfile.TemporaryDirectory(dir=project, prefix=f".golden-new-{name}-") as tmp:
        aside = Path(tmp)
        for rel, template in made:
            (aside / rel).parent.mkdir(parents=True, exist_ok=True)
            (aside / rel).write_text(render(template, name), encoding="utf-8")
        for top in ("roles", "molecule"):
            (project / top).mkdir(exist_ok=True)
            shutil.move(str(aside / top / name), project / top / name)
    return NewRole(name=name, files=tuple(rel for rel, _ in made))
