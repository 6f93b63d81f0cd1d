"""Image specs: typed, validated models of ``images/<name>.yaml``.

Every problem is reported at once, each with the file and the path inside it
(``images/web.yaml: .roles[1].vars: expected a mapping``), in the manner of osbuild.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from toolkit.core.errors import SpecError
from toolkit.image.roleargs import role_var_problems

NAME_RE = r"^[a-z][a-z0-9_-]{0,62}$"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseOS(StrictModel):
    distro: Literal["debian"] = "debian"
    release: str = Field(default="bookworm", pattern=r"^[a-z]+$")
    # Package mirror URLs; when unset they are read from the build host's apt sources.
    mirror: str | None = None
    security_mirror: str | None = None


class RoleRef(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    vars: dict[str, Any] = Field(default_factory=dict)


class HttpProbe(StrictModel):
    port: int = Field(ge=1, le=65535)
    path: str = "/"
    expect_status: int = 200
    expect_body: str | None = None


class CheckStage(StrEnum):
    BAKE = "bake"  # run inside the finished image chroot at the end of the bake
    BOOT = "boot"  # run against a booted machine (health gate for reimage)


class Check(StrictModel):
    """One check; exactly one of the kind fields is set."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    command: str | None = None
    file: str | None = None
    unit_enabled: str | None = None
    unit_active: str | None = None
    http: HttpProbe | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Check:
        kinds = [k for k in ("command", "file", "unit_enabled", "unit_active", "http") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("a check needs exactly one of command, file, unit_enabled, unit_active, http")
        return self

    @property
    def kind(self) -> str:
        for k in ("command", "file", "unit_enabled", "unit_active", "http"):
            if getattr(self, k):
                return k
        raise AssertionError("unreachable")

    @property
    def stage(self) -> CheckStage:
        return CheckStage.BOOT if self.kind in ("unit_active", "http") else CheckStage.BAKE


class Output(StrEnum):
    NETBOOT = "netboot"  # vmlinuz + initrd + rootfs.squashfs
    TAR = "tar"


class ImageSpec(StrictModel):
    name: str = Field(pattern=NAME_RE)
    description: str = ""
    extends: str | None = Field(default=None, pattern=NAME_RE)
    base: BaseOS = Field(default_factory=BaseOS)
    elements: list[str] = Field(default_factory=list)
    packages: list[str] = Field(default_factory=list)
    roles: list[RoleRef] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    outputs: list[Output] = Field(default_factory=lambda: [Output.NETBOOT])
    # Extra DIB_* variables. They are recorded in the manifest, so they must hold no secrets.
    dib_env: dict[str, str] = Field(default_factory=dict)

    @field_validator("dib_env")
    @classmethod
    def _dib_only(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not re.match(r"^DIB_[A-Z0-9_]+$", k)]
        if bad:
            raise ValueError(f"keys must look like DIB_NAME: {', '.join(sorted(bad))}")
        return value

    @field_validator("packages", "elements")
    @classmethod
    def _no_dupes(cls, value: list[str]) -> list[str]:
        seen = {v for v in value if value.count(v) > 1}
        if seen:
            raise ValueError(f"listed more than once: {', '.join(sorted(seen))}")
        return value

    def merged_over(self, parent: ImageSpec) -> ImageSpec:
        """This spec layered on its parent: parent's lists first, then ours."""

        def union(a: list[Any], b: list[Any]) -> list[Any]:
            return a + [x for x in b if x not in a]

        return ImageSpec(
            name=self.name,
            description=self.description or parent.description,
            extends=None,
            base=self.base if "base" in self.model_fields_set else parent.base,
            elements=union(parent.elements, self.elements),
            packages=union(parent.packages, self.packages),
            roles=[r for r in parent.roles if r.name not in {x.name for x in self.roles}] + self.roles,
            checks=[c for c in parent.checks if c.name not in {x.name for x in self.checks}] + self.checks,
            outputs=self.outputs if "outputs" in self.model_fields_set else parent.outputs,
            dib_env={**parent.dib_env, **self.dib_env},
        )


def json_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out or "."


def _explain(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _rel(path: Path, root: Path | None) -> str:
    if root:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)


def parse_spec_file(path: Path, root: Path | None = None) -> tuple[ImageSpec | None, list[str]]:
    """Parse one spec file; return the spec (or None) and every problem found in it."""
    where = _rel(path, root)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [f"{where}: file not found"]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        pos = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        return None, [f"{where}{pos}: not valid YAML: {exc.problem}"]
    except yaml.YAMLError as exc:
        return None, [f"{where}: not valid YAML: {exc}"]
    if not isinstance(data, dict):
        return None, [f"{where}: .: expected a mapping at the top level, got {type(data).__name__}"]
    try:
        spec = ImageSpec.model_validate(data)
    except ValidationError as exc:
        return None, [f"{where}: {json_path(e['loc'])}: {_explain(dict(e))}" for e in exc.errors()]
    problems = []
    if spec.name != path.stem:
        problems.append(f"{where}: .name: must match the file name ({path.stem!r}), got {spec.name!r}")
    return spec, problems


def role_problems(spec: ImageSpec, where: str, roles_dir: Path) -> list[str]:
    problems = []
    for i, ref in enumerate(spec.roles):
        if not (roles_dir / ref.name / "tasks" / "main.yml").is_file():
            problems.append(
                f"{where}: .roles[{i}].name: role {ref.name!r} not found (no roles/{ref.name}/tasks/main.yml)"
            )
    return problems + role_var_problems([(r.name, r.vars) for r in spec.roles], where, roles_dir)


def spec_files(images_dir: Path) -> list[Path]:
    return sorted(images_dir.glob("*.yaml"))


def load_image(name: str, images_dir: Path, roles_dir: Path, _seen: tuple[str, ...] = ()) -> ImageSpec:
    """Load ``images/<name>.yaml`` with its ``extends`` chain resolved; raise SpecError on any problem."""
    root = images_dir.parent
    path = images_dir / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in spec_files(images_dir)) or "none"
        raise SpecError([f"{_rel(path, root)}: no such image spec (known images: {known})"])
    spec, problems = parse_spec_file(path, root)
    if spec is None or problems:
        raise SpecError(problems)
    where = _rel(path, root)
    problems += role_problems(spec, where, roles_dir)
    if problems:
        raise SpecError(problems)
    if spec.extends:
        if spec.extends in (*_seen, name):
            raise SpecError([f"{where}: .extends: cycle through {' -> '.join((*_seen, name, spec.extends))}"])
        parent = load_image(spec.extends, images_dir, roles_dir, (*_seen, name))
        spec = spec.merged_over(parent)
    return spec


def validate_all(images_dir: Path, roles_dir: Path) -> list[str]:
    """Every problem in every spec and every role, as ``file: path: message`` lines."""
    root = images_dir.parent
    problems: list[str] = []
    names = {p.stem for p in spec_files(images_dir)}
    for path in spec_files(images_dir):
        spec, found = parse_spec_file(path, root)
        problems += found
        if spec is None:
            continue
        where = _rel(path, root)
        problems += role_problems(spec, where, roles_dir)
        if spec.extends and spec.extends not in names:
            problems.append(f"{where}: .extends: no image spec named {spec.extends!r}")
    problems += _role_file_problems(roles_dir, root)
    return problems


def _role_file_problems(roles_dir: Path, root: Path) -> list[str]:
    problems: list[str] = []
    if not roles_dir.is_dir():
        return problems
    for role in sorted(p for p in roles_dir.iterdir() if p.is_dir()):
        if not (role / "tasks" / "main.yml").is_file():
            problems.append(f"{_rel(role, root)}: a role needs tasks/main.yml")
        for f in sorted(role.rglob("*.yml")):
            if "templates" in f.parts or "files" in f.parts:
                continue
            try:
                yaml.safe_load(f.read_text(encoding="utf-8"))
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark
                pos = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
                problems.append(f"{_rel(f, root)}{pos}: not valid YAML: {exc.problem}")
    return problems
