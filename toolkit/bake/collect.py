"""Collecting what a builder produced into the store, the same for every builder:
artifacts -> logs -> mounts -> manifest -> commit. Every failure here is a ``BakeError``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from toolkit.bake import cleanup, uki
from toolkit.bake.plan import BakePlan
from toolkit.core.errors import BakeError
from toolkit.core.fsutil import sha256_file
from toolkit.image.manifest import UKI, UKI_CERT, Artifact, CheckResult, Manifest
from toolkit.runs.record import RunRecord
from toolkit.store.artifacts import Build, Store
from toolkit.trust import secureboot
from toolkit.trust.secureboot import DbKey


@dataclass(frozen=True)
class Outputs:
    """A root a builder made, and what the manifest says of it."""

    builder: str  # as messages name it: DIB, packer
    work: Path  # the builder's work folder inside the staging folder: removed once collected
    artifacts: dict[str, Path]  # name in the store -> the file made (moved into the staging folder)
    logs: list[tuple[Path, str]]  # a file or folder to keep -> its name under logs/
    packages: dict[str, str]
    package_archives: dict[str, str]
    checks: dict[str, CheckResult]
    tool_versions: dict[str, str]
    dib_env: dict[str, str]
    manifest_extra: dict[str, Any] = field(default_factory=dict)  # builder-only manifest fields
    timings: dict[str, Any] = field(default_factory=dict)  # builder-only BakeResult fields


def collect(store: Store, plan: BakePlan, staged: Path, record: RunRecord, out: Outputs, started: float,
            signer: DbKey | None = None) -> Build:
    """Put ``out`` into the staging folder with its manifest, commit it, and advance the snapshot stamp.
    With ``signer`` (the home's Secure Boot db key) the build also gets a signed UKI and its certificate."""
    artifacts = {name: _artifact(plan, staged / name, src, out.builder, record) for name, src in out.artifacts.items()}
    if signer is not None:
        artifacts.update(signed_uki(staged, artifacts["rootfs.squashfs"].sha256, signer))
    _keep_logs(staged / "logs", out.logs)
    left = cleanup.release(staged)
    if left:
        raise BakeError(f"bake of {plan.image}: mounts left under the staging folder: {', '.join(left)}")
    shutil.rmtree(out.work)
    manifest = Manifest(
        image=plan.image, build_id=plan.build_id, created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        spec=plan.spec_json, inputs=plan.inputs.as_dict(), artifacts=artifacts, packages=out.packages,
        package_archives=out.package_archives, roles=dict(plan.inputs.roles), tool_versions=out.tool_versions,
        dib_env=out.dib_env, bake_seconds=round(time.monotonic() - started, 1), checks=out.checks,
        **out.manifest_extra,
    )
    manifest.write(staged / "manifest.json")
    build = store.commit(plan.image, plan.build_id, staged)
    store.set_snapshot(plan.image, plan.inputs.snapshot)
    return build


def _artifact(plan: BakePlan, dest: Path, src: Path, builder: str, record: RunRecord) -> Artifact:
    if not src.is_file() or src.stat().st_size == 0:
        raise BakeError(f"bake of {plan.image}: {builder} finished but produced no {src.name}",
                        hint=f"see the log: {record.stdout}")
    src.rename(dest)
    dest.chmod(0o644)
    return Artifact(sha256=sha256_file(dest), size=dest.stat().st_size)


def signed_uki(folder: Path, rootfs_sha256: str, signer: DbKey) -> dict[str, Artifact]:
    """Make ``uki.efi`` (from ``vmlinuz`` and ``initrd`` in ``folder``, the rootfs hash inside, signed) and
    ``uki.crt`` beside them; their manifest entries."""
    unsigned = folder / f".{UKI}.unsigned"
    try:
        uki.assemble(folder / "vmlinuz", folder / "initrd", rootfs_sha256, unsigned)
        secureboot.sign_efi(signer, unsigned, folder / UKI)
    finally:
        unsigned.unlink(missing_ok=True)
    shutil.copyfile(signer.cert, folder / UKI_CERT)
    made = {}
    for name in (UKI, UKI_CERT):
        (folder / name).chmod(0o644)
        made[name] = Artifact(sha256=sha256_file(folder / name), size=(folder / name).stat().st_size)
    return made


def _keep_logs(logs: Path, kept: list[tuple[Path, str]]) -> None:
    logs.mkdir()
    for src, name in kept:
        if src.is_dir():
            shutil.copytree(src, logs / name, symlinks=True)
        else:
            shutil.copyfile(src, logs / name)
