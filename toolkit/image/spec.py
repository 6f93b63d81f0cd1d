"""Image specs: typed, validated models of ``images/<name>.yaml``.

Every problem is reported at once, each with the file and the path inside it
(``images/web.yaml: .roles[1].vars: expected a mapping``), in the manner of osbuild.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from toolkit.core.errors import InputError, SpecError
from toolkit.core.yamlfile import load_yaml_file
from toolkit.image.fields import (
    ElementName,
    MirrorUrl,
    PackageName,
    RoleName,
    UnitName,
    check_allow_path,
    check_chroot_path,
    check_url_path,
    no_duplicates,
    no_nul,
    one_line,
    show,
)
from toolkit.image.ref import IMAGE_NAME_RE
from toolkit.image.roleargs import role_var_problems

NAME_RE = IMAGE_NAME_RE.pattern
MAX_EXTENDS = 8  # layers of ``extends``; deeper is a mistake, not a design


class StrictModel(BaseModel):
    """A frozen model that refuses unknown keys."""
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseOS(StrictModel):
    """The distribution and release an image starts from, and its package mirrors."""
    distro: Literal["debian"] = "debian"
    release: str = Field(default="bookworm", pattern=r"^[a-z]{1,32}$")
    # Package mirror URLs; when unset they are read from the build host's apt sources.
    mirror: MirrorUrl | None = None
    security_mirror: MirrorUrl | None = None


class RoleRef(StrictModel):
    """A role an image runs, with its variables."""
    name: RoleName
    vars: dict[str, Any] = Field(default_factory=dict, max_length=1000)


class HttpProbe(StrictModel):
    """A boot check's HTTP request and the status it expects."""
    port: int = Field(ge=1, le=65535)
    path: Annotated[str, AfterValidator(check_url_path)] = "/"
    expect_status: int = Field(default=200, ge=100, le=599)
    expect_body: str | None = Field(default=None, max_length=4096)


class CheckStage(StrEnum):
    """When a check runs: at the end of the bake, or against a booted machine."""
    BAKE = "bake"  # run inside the finished image chroot at the end of the bake
    BOOT = "boot"  # run against a booted machine (health gate for reimage)


class Check(StrictModel):
    """One check; exactly one of the kind fields is set."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    command: Annotated[str, Field(max_length=8192), AfterValidator(no_nul)] | None = None
    file: Annotated[str, AfterValidator(check_chroot_path)] | None = None
    unit_enabled: UnitName | None = None
    unit_active: UnitName | None = None
    http: HttpProbe | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Check:
        kinds = [k for k in ("command", "file", "unit_enabled", "unit_active", "http") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("a check needs exactly one of command, file, unit_enabled, unit_active, http")
        return self

    @property
    def kind(self) -> str:
        """Which kind of check this is (command, file, unit_enabled, unit_active, http)."""
        for k in ("command", "file", "unit_enabled", "unit_active", "http"):
            if getattr(self, k):
                return k
        raise AssertionError("unreachable")

    @property
    def stage(self) -> CheckStage:
        """When it runs: boot checks need a running system."""
        return CheckStage.BOOT if self.kind in ("unit_active", "http") else CheckStage.BAKE


class Builder(StrEnum):
    """What makes an image's root: DIB in a chroot, or Packer in a booted machine."""
    DIB = "dib"  # a chroot: roles run with no running system (enable, never start)
    PACKER = "packer"  # the parent's DIB root booted in a QEMU machine by Packer; roles see systemd running


# A role whose meta/golden.yml says ``needs_running_system: true`` starts services or talks to a
# running system at bake time: only ``builder: packer`` can bake it. (Not meta/main.yml: Ansible
# refuses keys of ours there, in galaxy_info ansible-lint's schema does.)
RUNNING_SYSTEM_KEY = "needs_running_system"
ROLE_META = "meta/golden.yml"


class Output(StrEnum):
    """What a bake produces."""
    NETBOOT = "netboot"  # vmlinuz + initrd + rootfs.squashfs
    TAR = "tar"


class ImageSpec(StrictModel):
    """An image spec (``images/<name>.yaml``), with its ``extends`` chain resolved."""
    name: str = Field(pattern=NAME_RE)
    description: Annotated[str, Field(max_length=1000), AfterValidator(one_line)] = ""
    extends: str | None = Field(default=None, pattern=NAME_RE)
    # How this layer is baked; not inherited: a packer image usually extends a DIB-baked one.
    builder: Builder = Builder.DIB
    base: BaseOS = Field(default_factory=BaseOS)
    elements: list[ElementName] = Field(default_factory=list, max_length=100)
    # More than any real image holds, fewer than Debian's whole archive.
    packages: list[PackageName] = Field(default_factory=list, max_length=50_000)
    roles: list[RoleRef] = Field(default_factory=list, max_length=100)
    checks: list[Check] = Field(default_factory=list, max_length=200)
    outputs: list[Output] = Field(default_factory=lambda: [Output.NETBOOT], max_length=len(Output))
    # Paths (globs allowed) this image changes at run time that are not drift; the agent's built-in
    # list stays small (no home folders, no shell history), so each image names its own.
    drift_allowlist: list[Annotated[str, AfterValidator(check_allow_path)]] = Field(
        default_factory=list, max_length=500)
    # Extra DIB_* variables. They are recorded in the manifest, so they must hold no secrets.
    dib_env: dict[str, Annotated[str, Field(max_length=65536), AfterValidator(no_nul)]] = Field(
        default_factory=dict, max_length=100)

    @field_validator("dib_env")
    @classmethod
    def _dib_only(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [show(k) for k in value if not re.fullmatch(r"DIB_[A-Z0-9_]{1,64}", k)]
        if bad:
            raise ValueError(f"keys must look like DIB_NAME: {', '.join(sorted(bad))}")
        return value

    @field_validator("packages", "elements", "drift_allowlist")
    @classmethod
    def _no_dupes(cls, value: list[str]) -> list[str]:
        return no_duplicates(value)

    def merged_over(self, parent: ImageSpec) -> ImageSpec:
        """This spec layered on its parent: parent's lists first, then ours."""

        def union(a: list[Any], b: list[Any]) -> list[Any]:
            known = set(a)
            return a + [x for x in b if x not in known]

        own_roles = {x.name for x in self.roles}
        own_checks = {x.name for x in self.checks}
        return ImageSpec(
            name=self.name,
            description=self.description or parent.description,
            extends=None,
            builder=self.builder,
            base=self.base if "base" in self.model_fields_set else parent.base,
            elements=union(parent.elements, self.elements),
            packages=union(parent.packages, self.packages),
            roles=[r for r in parent.roles if r.name not in own_roles] + self.roles,
            checks=[c for c in parent.checks if c.name not in own_checks] + self.checks,
            outputs=self.outputs if "outputs" in self.model_fields_set else parent.outputs,
            drift_allowlist=union(parent.drift_allowlist, self.drift_allowlist),
            dib_env={**parent.dib_env, **self.dib_env},
        )


def json_path(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as ``.roles[0].name``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:  # a key someone typed may be long or hold a newline: keep the message one short line
            out += f".{part}" if re.fullmatch(r"[\w.-]{1,64}", part) else f"[{show(part)}]"
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


def _value_problems(data: Any, loc: tuple[int | str, ...] = ()) -> Iterator[str]:
    """Values no field type catches, anywhere (role vars too): non-finite numbers, NUL characters."""
    if isinstance(data, float) and not math.isfinite(data):
        yield f"{json_path(loc)}: numbers must be finite, got {data}"
    elif isinstance(data, str) and "\0" in data:
        yield f"{json_path(loc)}: must not contain a NUL character"
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _value_problems(value, (*loc, str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _value_problems(value, (*loc, i))


def parse_spec_file(path: Path, root: Path | None = None) -> tuple[ImageSpec | None, list[str]]:
    """Parse one spec file; return the spec (or None) and every problem found in it."""
    where = _rel(path, root)
    try:
        data = load_yaml_file(path, where)
    except InputError as exc:
        return None, [exc.message]
    if not isinstance(data, dict):
        return None, [f"{where}: .: expected a mapping at the top level, got {type(data).__name__}"]
    problems = [f"{where}: {p}" for p in _value_problems(data)]
    try:
        spec = ImageSpec.model_validate(data)
    except ValidationError as exc:
        return None, problems + [f"{where}: {json_path(e['loc'])}: {_explain(dict(e))}" for e in exc.errors()]
    if spec.name != path.stem:
        problems.append(f"{where}: .name: must match the file name ({path.stem!r}), got {spec.name!r}")
    return spec, problems + [f"{where}: {p}" for p in layer_problems(spec)]


def layer_problems(spec: ImageSpec) -> list[str]:
    """What one spec file may not say for its builder (checked per file, before layers merge)."""
    if spec.builder is not Builder.PACKER:
        return []
    problems = []
    if not spec.extends:
        problems.append(".builder: packer boots the root of a DIB-baked parent: set extends")
    for key in ("elements", "packages", "dib_env"):
        if getattr(spec, key):
            problems.append(f".{key}: a builder: packer layer takes no {key} (a DIB option): put them in the "
                            "parent image, or install packages with a role")
    if "base" in spec.model_fields_set:
        problems.append(".base: a builder: packer layer takes its base from the parent image: remove base")
    return problems


def role_needs_running_system(role_dir: Path) -> bool:
    """True when the role's meta/golden.yml says ``needs_running_system: true``."""
    meta = role_dir / ROLE_META
    if not meta.is_file():
        return False
    try:
        data = load_yaml_file(meta, str(meta))
    except InputError:
        return False  # reported by _role_file_problems
    return isinstance(data, dict) and data.get(RUNNING_SYSTEM_KEY) is True


def role_problems(spec: ImageSpec, where: str, roles_dir: Path) -> list[str]:
    """What is wrong with the spec's roles (missing, bad variables), one line each."""
    problems = []
    for i, ref in enumerate(spec.roles):
        if not (roles_dir / ref.name / "tasks" / "main.yml").is_file():
            problems.append(
                f"{where}: .roles[{i}].name: role {ref.name!r} not found (no roles/{ref.name}/tasks/main.yml)"
            )
        elif spec.builder is Builder.DIB and role_needs_running_system(roles_dir / ref.name):
            problems.append(
                f"{where}: .roles[{i}].name: role {ref.name!r} needs a running system ({ROLE_META} "
                f"{RUNNING_SYSTEM_KEY}) and cannot run in a DIB chroot: use builder: packer"
            )
    return problems + role_var_problems([(r.name, r.vars) for r in spec.roles], where, roles_dir)


def spec_files(images_dir: Path) -> list[Path]:
    """The project's image spec files."""
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
            raise SpecError([f"{where}: .extends: cycle {' -> '.join((*_seen, name, spec.extends))}"])
        if len(_seen) >= MAX_EXTENDS:
            raise SpecError([f"{where}: .extends: more than {MAX_EXTENDS} layers"])
        parent = load_image(spec.extends, images_dir, roles_dir, (*_seen, name))
        spec = merge_layers(spec, parent, where)
    return spec


def load_layer(name: str, images_dir: Path) -> ImageSpec:
    """``images/<name>.yaml`` alone, its ``extends`` unresolved (what this layer itself adds)."""
    spec, problems = parse_spec_file(images_dir / f"{name}.yaml", images_dir.parent)
    if spec is None or problems:
        raise SpecError(problems or [f"images/{name}.yaml: cannot be read"])
    return spec


def merge_layers(spec: ImageSpec, parent: ImageSpec, where: str) -> ImageSpec:
    """``spec`` over ``parent``; a merged spec that breaks a limit is a SpecError naming ``where``."""
    try:
        return spec.merged_over(parent)
    except ValidationError as exc:  # e.g. the union of both package lists is over the limit
        raise SpecError([f"{where}: {json_path(e['loc'])}: {_explain(dict(e))} (merged with {parent.name})"
                         for e in exc.errors()]) from None


def validate_all(images_dir: Path, roles_dir: Path) -> list[str]:
    """Every problem in every spec and every role, as ``file: path: message`` lines."""
    root = images_dir.parent
    problems: list[str] = []
    names = {p.stem for p in spec_files(images_dir)}
    parents: dict[str, str | None] = {}
    wheres: dict[str, str] = {}
    for path in spec_files(images_dir):
        spec, found = parse_spec_file(path, root)
        problems += found
        if spec is None:
            continue
        where = wheres[path.stem] = _rel(path, root)
        parents[path.stem] = spec.extends
        problems += role_problems(spec, where, roles_dir)
        if spec.extends and spec.extends not in names:
            problems.append(f"{where}: .extends: no image spec named {spec.extends!r}")
    problems += extends_problems(parents, wheres)
    problems += _role_file_problems(roles_dir, root)
    return problems


def extends_problems(parents: dict[str, str | None], wheres: dict[str, str]) -> list[str]:
    """Cycles (reported once, at the cycle's first name) and chains deeper than MAX_EXTENDS."""
    problems = []
    for name in sorted(parents):
        chain = [name]
        while (parent := parents.get(chain[-1])) in parents and parent not in chain:
            chain.append(parent)
        if parent == name and name == min(chain):
            problems.append(f"{wheres[name]}: .extends: cycle {' -> '.join([*chain, name])}")
        elif parent not in chain and len(chain) > MAX_EXTENDS + 1:
            problems.append(f"{wheres[name]}: .extends: more than {MAX_EXTENDS} layers ({' -> '.join(chain)})")
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
                data = load_yaml_file(f, _rel(f, root))
            except InputError as exc:
                problems.append(exc.message)
                continue
            if f == role / ROLE_META:
                problems += [f"{_rel(f, root)}: {p}" for p in role_meta_problems(data)]
    return problems


def role_meta_problems(data: Any) -> list[str]:
    """meta/golden.yml holds a mapping of known keys with boolean values."""
    if data is None:
        return []
    if not isinstance(data, dict):
        return [f".: expected a mapping, got {type(data).__name__}"]
    problems = [f"{json_path((str(k),))}: unknown key (known: {RUNNING_SYSTEM_KEY})"
                for k in data if k != RUNNING_SYSTEM_KEY]
    if RUNNING_SYSTEM_KEY in data and not isinstance(data[RUNNING_SYSTEM_KEY], bool):
        problems.append(f".{RUNNING_SYSTEM_KEY}: expected true or false, got {show(str(data[RUNNING_SYSTEM_KEY]))}")
    return problems
