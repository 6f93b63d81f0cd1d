"""Pure planning of a bake: effective spec -> canonical inputs -> build id.

Nothing here runs a command or writes a file. The build id is the hash of everything that
decides what the image contains: the effective spec, the bytes of every role it uses and of
every DIB element we ship, the DIB version, the bake recipe version, and the package snapshot
stamp (see ``snapshot_stamp``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from toolkit.core.errors import BakeError
from toolkit.image.spec import Check, CheckStage, ImageSpec, Output, RoleRef

ELEMENTS_DIR = Path(__file__).resolve().parent / "elements"

# Bump when the way we drive DIB changes what ends up in the image (flags, env, hook logic), so
# such a change yields new build ids instead of silently reusing old builds.
RECIPE = 5  # 4: manifests record each package's archive; 5: a reproducible initramfs

# Elements every netboot bake uses, before the spec's own elements.
BASE_ELEMENTS = ("debian-minimal", "golden-netboot")

ID_LENGTH = 16


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no spaces: the same data, the same text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_text(text: str) -> str:
    """The SHA-256 of ``text`` (UTF-8), in hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def tree_digest(root: Path) -> str:
    """Hash of a folder: every file's relative path, executable bit and bytes (symlinks by target)."""
    if not root.is_dir():
        raise BakeError(f"{root}: folder not found")
    entries = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in path.parts or path.name.endswith((".pyc", ".swp", "~")):
            continue
        if path.is_symlink():
            entries.append([rel, "link", os.readlink(path)])
        elif path.is_file():
            mode = "x" if os.access(path, os.X_OK) else "-"
            entries.append([rel, mode, hashlib.sha256(path.read_bytes()).hexdigest()])
    return sha256_text(canonical_json(entries))


def snapshot_stamp(stored: str | None, refresh: bool, now: datetime | None = None) -> str:
    """The package snapshot key of a bake.

    The bake day would give every bake on a new day a new id, so unchanged inputs would never hit
    the cache. Instead each image keeps a stored stamp, set at its first bake and advanced only by
    ``--refresh`` (nightly patching): then packages are re-resolved and the new stamp goes into the id.
    """
    now = now or datetime.now(UTC)
    if refresh or not stored:
        return now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return stored


def snapshot_epoch(stamp: str) -> int:
    """The stamp as seconds since the epoch: the SOURCE_DATE_EPOCH of what a bake makes
    reproducible (the initramfs), shared by every bake of the same snapshot."""
    try:
        return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
    except ValueError:
        raise BakeError(f"package snapshot stamp {stamp!r} is not of the form 2026-01-31T12:00:00Z",
                        hint="run golden bake IMAGE --refresh to set a new one") from None


@dataclass(frozen=True)
class BakeInputs:
    """Everything a build depends on; its hash is the build id."""
    spec_sha256: str
    roles: dict[str, str]
    elements: dict[str, str]
    dib_version: str
    snapshot: str
    recipe: int = RECIPE
    rebuild: str = ""  # set by --force: the same inputs baked again get their own id (builds are immutable)
    # builder: packer only: the parent build whose root the machine boots, and the packer version
    parent_build: str = ""
    packer_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The inputs as recorded in the manifest (and hashed)."""
        data: dict[str, Any] = {
            "spec_sha256": self.spec_sha256,
            "roles": dict(self.roles),
            "elements": dict(self.elements),
            "dib_version": self.dib_version,
            "snapshot": self.snapshot,
            "recipe": self.recipe,
        }
        if self.rebuild:  # only then: every id baked without --force stays what it was
            data["rebuild"] = self.rebuild
        if self.parent_build:  # likewise: DIB bakes keep their ids
            data["parent_build"] = self.parent_build
            data["packer_version"] = self.packer_version
        return data

    def build_id(self) -> str:
        """The build id: a hash of the canonical inputs."""
        return sha256_text(canonical_json(self.as_dict()))[:ID_LENGTH]


@dataclass(frozen=True)
class BakePlan:
    """A bake, planned: the spec, its inputs and id, the elements and checks to run."""
    image: str
    spec: ImageSpec
    inputs: BakeInputs
    build_id: str
    elements: tuple[str, ...]
    elements_path: tuple[Path, ...]
    packages: tuple[str, ...]
    bake_checks: tuple[Check, ...]
    refresh: bool = False
    spec_json: dict[str, Any] = field(default_factory=dict)
    # builder: packer: the roles the machine runs (the layer's own; the parent's are in its root)
    machine_roles: tuple[RoleRef, ...] = ()


def effective_spec_json(spec: ImageSpec) -> dict[str, Any]:
    """The spec as JSON, defaults filled in (what the manifest records)."""
    return spec.model_dump(mode="json")


def plan_bake(
    spec: ImageSpec,
    roles_dir: Path,
    dib_version: str,
    snapshot: str,
    *,
    elements_dir: Path = ELEMENTS_DIR,
    project_elements: Path | None = None,
    refresh: bool = False,
    rebuild: str = "",
    parent_build: str = "",
    packer_version: str = "",
    machine_roles: tuple[RoleRef, ...] = (),
) -> BakePlan:
    """Plan one bake. ``project_elements`` is the project's own ``elements/`` folder, if it has one:
    extra DIB elements a spec may list, hashed into the id like ours."""
    unsupported = [o.value for o in spec.outputs if o is not Output.NETBOOT]
    if unsupported:
        raise BakeError(f"image {spec.name}: output {', '.join(unsupported)} cannot be baked yet (only netboot)",
                        hint="set outputs: [netboot] in the image spec")
    spec_json = effective_spec_json(spec)
    roles: dict[str, str] = {}
    for ref in spec.roles:
        if ref.name not in roles:
            roles[ref.name] = tree_digest(roles_dir / ref.name)
    path = [elements_dir] + ([project_elements] if project_elements and project_elements.is_dir() else [])
    element_digests = {"golden": tree_digest(path[0])}
    if len(path) > 1:
        element_digests["project"] = tree_digest(path[1])
    inputs = BakeInputs(
        spec_sha256=sha256_text(canonical_json(spec_json)),
        roles=roles,
        elements=element_digests,
        dib_version=dib_version,
        snapshot=snapshot,
        rebuild=rebuild,
        parent_build=parent_build,
        packer_version=packer_version,
    )
    elements = tuple(BASE_ELEMENTS) + tuple(e for e in spec.elements if e not in BASE_ELEMENTS)
    return BakePlan(
        image=spec.name,
        spec=spec,
        inputs=inputs,
        build_id=inputs.build_id(),
        elements=elements,
        elements_path=tuple(path),
        packages=tuple(spec.packages),
        bake_checks=tuple(c for c in spec.checks if c.stage is CheckStage.BAKE),
        refresh=refresh,
        spec_json=spec_json,
        machine_roles=machine_roles,
    )


def dib_version() -> str:
    """This machine's diskimage-builder version."""
    from diskimage_builder import version

    return str(version.version_info.version_string())
