"""The DIB builder: disk-image-create with our elements and bake-time roles (from the cached pre-role
root when there is one), then its root squashed. It only makes the root and its logs; the attempt
(toolkit.bake.attempt) and the collection (toolkit.bake.collect) are the engine's.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import toolkit
from toolkit.bake.aptsources import Mirrors, host_mirrors
from toolkit.bake.attempt import Attempt
from toolkit.bake.collect import Outputs
from toolkit.bake.dib import (
    BakePaths,
    DibInvocation,
    dib_command,
    parse_failure,
    parse_phase,
    squashfs_command,
    strip_timestamp,
)
from toolkit.bake.plan import BakePlan, snapshot_epoch
from toolkit.bake.rootcache import RootCache, capturing, from_cache, pre_role_key, shadow_elements
from toolkit.core.config import Settings
from toolkit.core.errors import BakeError, CommandError, InputError
from toolkit.core.run import TAIL_LINES, run
from toolkit.image.fields import check_mirror_url
from toolkit.image.manifest import CheckResult
from toolkit.image.spec import CheckStage, ImageSpec

log = logging.getLogger("golden.bake")

DIB_TIMEOUT = 3600.0
ARTIFACT_SOURCES = (("rootfs.squashfs", "squashfs"), ("vmlinuz", "vmlinuz"), ("initrd", "initrd"))


class BakeStepError(CommandError):
    """A bake failed in a named step; carries the tail of that step's log."""


@dataclass
class _Watch:
    """What we learn from DIB's output while it runs."""

    on_phase: Callable[[str], None] | None = None
    phase: str = "starting"
    failure: str | None = None
    phases: list[str] = field(default_factory=list)

    def past(self, phase: str) -> bool:
        """True once DIB has moved on from ``phase`` (so whatever it wrote is complete)."""
        return phase in self.phases and self.phases[-1] != phase

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.phases.append(phase)
        if self.on_phase:
            self.on_phase(phase)

    def on_line(self, line: str) -> None:
        failed = parse_failure(line)
        if failed and self.failure is None:
            self.failure = failed
        phase = parse_phase(line)
        if phase:
            self.set_phase(phase)


def _configured_mirror(value: str | None, key: str, env: str) -> str | None:
    # The spec's mirrors are checked by validation; these come from golden.yaml or the environment
    # and land in the same apt sources line.
    if value is None:
        return None
    try:
        return check_mirror_url(value)
    except ValueError as exc:
        raise InputError(f"golden.yaml {key} (or {env}): {exc}") from None


def resolve_mirrors(spec: ImageSpec, settings: Settings) -> Mirrors:
    """The spec's mirrors, else golden.yaml's or the environment's, else the build host's."""
    main = spec.base.mirror or _configured_mirror(settings.mirror, "mirror", "GOLDEN_MIRROR")
    security = spec.base.security_mirror or _configured_mirror(
        settings.security_mirror, "security_mirror", "GOLDEN_SECURITY_MIRROR")
    if main and security:
        return Mirrors(main=main, security=security)
    host = host_mirrors(spec.base.release)
    return Mirrors(main=main or host.main, security=security or host.security)


class DibBuilder:
    """One DIB bake of ``plan``: ``produce`` runs disk-image-create and squashes the root."""

    name = "DIB"

    def __init__(self, settings: Settings, plan: BakePlan, *, use_root_cache: bool) -> None:
        self.settings, self.plan, self.use_root_cache = settings, plan, use_root_cache
        self.watch = _Watch()
        self.running = False  # from DIB's start on, command and file-system failures name its step

    def produce(self, attempt: Attempt) -> Outputs:
        """Run DIB (from the cached pre-role root when there is one) and squash its root."""
        settings, plan, watch = self.settings, self.plan, self.watch
        watch.on_phase = attempt.set_phase
        attempt.cleanup.callback(_prune_root_cache, settings)
        paths = BakePaths(attempt.staged / "work")
        for d in (paths.tmp, paths.out):
            d.mkdir(parents=True)
        mirrors = resolve_mirrors(plan.spec, settings)
        lease = _prepare_cache(settings, paths, plan)
        attempt.cleanup.callback(lease.release)
        # The tarball is whole once DIB moved past that step, even if a later one failed.
        attempt.on_failure.append(
            lambda: _promote_tarball(paths, lease.shared_tarball) if watch.past("root.d/08-debootstrap") else None)
        _write_hook_plan(paths, plan, settings)
        inv = dib_command(plan, paths, mirrors, use_debootstrap_cache=lease.use_tarball,
                          project=Path(toolkit.__file__).resolve().parent.parent)
        key = pre_role_key(plan, inv)
        root = _root_cache(settings).lease(key) if self.use_root_cache else None
        if root is not None:
            attempt.cleanup.callback(root.release)
            inv = from_cache(inv, shadow_elements(plan.elements, plan.elements_path, paths.work / "shadow-elements"),
                             root.path)
            watch.set_phase(f"from cached pre-role root {key}")
        else:
            inv = capturing(inv, _root_cache(settings).path(key))
        record = attempt.record
        record.start(inv.describe(), {**_record_inputs(plan, inv),
                                      "pre_role_root": {"key": key, "restored": root is not None}})
        self.running = True
        dib_started = time.monotonic()
        run(inv.argv, env=inv.env, log_path=record.stdout, on_line=watch.on_line, timeout=DIB_TIMEOUT,
            what="disk-image-create")
        dib_seconds = time.monotonic() - dib_started
        _promote_tarball(paths, lease.shared_tarball)
        watch.set_phase("squashfs (zstd)")
        make_squashfs(paths, record.stdout)
        return _outputs(plan, paths, inv, record.stdout,
                        {"dib_seconds": dib_seconds, "pre_role_root": root.key if root else None})

    def explain(self, exc: Exception, attempt: Attempt) -> Exception:
        """A failed command or file-system error once DIB runs: the step it failed in, with its log's tail."""
        if not self.running or not isinstance(exc, CommandError | OSError):
            return exc
        stdout, image, watch = attempt.record.stdout, self.plan.image, self.watch
        if isinstance(exc, CommandError):
            attempt.rc = exc.returncode
            return BakeStepError(
                f"bake of {image} failed in {watch.failure or f'DIB step {watch.phase}'} ({exc.message})",
                returncode=exc.returncode, log_tail=_log_tail(stdout), hint=f"full log: {stdout}")
        # out of disk, most likely, in the store or the runs folder
        where = f" ({exc.filename})" if exc.filename else ""
        return BakeStepError(
            f"bake of {image} failed in {watch.failure or 'DIB step ' + watch.phase}: {exc.strerror or exc}{where}",
            returncode=1, log_tail=_log_tail(stdout), hint=f"full log: {stdout}")


def _outputs(plan: BakePlan, paths: BakePaths, inv: DibInvocation, stdout: Path, timings: dict[str, Any]) -> Outputs:
    sources = {"squashfs": paths.squashfs, "vmlinuz": paths.vmlinuz, "initrd": paths.initrd}
    packages = parse_dpkg_manifest(paths.dpkg_manifest)
    if not packages:
        raise BakeError(f"bake of {plan.image}: the dpkg manifest lists no installed packages")
    origins_file = paths.origins_result
    archives = json.loads(origins_file.read_text()) if origins_file.is_file() else {}
    checks_file = paths.checks_result
    checks = {k: CheckResult(**v) for k, v in json.loads(checks_file.read_text()).items()} \
        if checks_file.is_file() else {}
    ansible_artifacts = paths.hook / "ansible" / "artifacts"
    return Outputs(
        builder="DIB", work=paths.work, artifacts={name: sources[key] for name, key in ARTIFACT_SOURCES},
        logs=[(stdout, "dib.log")] + ([(ansible_artifacts, "ansible")] if ansible_artifacts.is_dir() else []),
        packages=packages,
        # DIB names multi-arch packages name:arch, dpkg's status by name alone
        package_archives={k: archives[k.split(":", 1)[0]] for k in packages if k.split(":", 1)[0] in archives},
        checks=checks, tool_versions=_tool_versions(plan), dib_env=dict(inv.dib_env), timings=timings)


def _root_cache(settings: Settings) -> RootCache:
    return RootCache(settings.cache / "pre-role")


APT_SLOTS = 8


@dataclass
class _CacheLease:
    use_tarball: bool
    shared_tarball: Path
    apt_slot: Path
    lock_fd: int

    def release(self) -> None:
        os.close(self.lock_fd)


def _lease_apt_slot(shared: Path) -> tuple[Path, int]:
    """An apt archive cache nobody else is using right now.

    apt locks its archive folder, so two bakes bind-mounting the same one fail ("Could not get
    lock /var/cache/apt/archives/lock"), whichever images or state homes they belong to. Each bake
    takes the first free slot of a small pool and holds its flock until it ends.
    """
    base = shared / "apt"
    base.mkdir(parents=True, exist_ok=True)
    for n in range(APT_SLOTS):
        fd = os.open(base / f"slot{n}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        slot = base / f"slot{n}"
        slot.mkdir(exist_ok=True)
        return slot, fd
    raise BakeError(f"all {APT_SLOTS} apt cache slots under {base} are in use",
                    hint="too many bakes at once on this machine; wait for one to finish")


def _prepare_cache(settings: Settings, paths: BakePaths, plan: BakePlan) -> _CacheLease:
    """Give DIB a per-bake cache folder linked to the shared caches (settings.cache/dib).

    The apt archive cache comes from a pool of locked slots (see _lease_apt_slot). The debootstrap
    tarball is shared read-only; a fresh one is written into the per-bake folder and promoted
    (atomic rename) once DIB has finished writing it.
    """
    shared = settings.cache / "dib"
    slot, fd = _lease_apt_slot(shared)
    try:
        paths.cache.mkdir(parents=True)
        (paths.cache / "apt").symlink_to(slot)
        tarball = f"debootstrap-debian-{plan.spec.base.release}-amd64.tar.gz"
        shared_tarball = shared / tarball
        use = shared_tarball.is_file() and not plan.refresh
        if use:
            (paths.cache / tarball).symlink_to(shared_tarball)
    except BaseException:
        os.close(fd)
        raise
    return _CacheLease(use_tarball=use, shared_tarball=shared_tarball, apt_slot=slot, lock_fd=fd)


def _promote_tarball(paths: BakePaths, shared_tarball: Path | None) -> None:
    if shared_tarball is None:
        return
    fresh = paths.cache / shared_tarball.name
    if fresh.is_symlink() or not fresh.is_file():
        return
    tmp = shared_tarball.with_name(f".{shared_tarball.name}.{os.getpid()}")
    shutil.copyfile(fresh, tmp)
    tmp.replace(shared_tarball)


def _write_hook_plan(paths: BakePaths, plan: BakePlan, settings: Settings) -> None:
    paths.hook.mkdir(parents=True)
    data = {
        "roles_dir": str(settings.roles_dir),
        "roles": [{"name": r.name, "vars": r.vars} for r in plan.spec.roles],
        "checks": [c.model_dump(mode="json") for c in plan.bake_checks],
        "boot_checks": [c.model_dump(mode="json", exclude_none=True) for c in plan.spec.checks
                        if c.stage is CheckStage.BOOT],
        "drift_allowlist": list(plan.spec.drift_allowlist),
        "source_date_epoch": snapshot_epoch(plan.inputs.snapshot),
        "initramfs_cache": str(settings.cache / "initramfs"),  # machine-wide (toolkit.bake.initramfs)
    }
    (paths.hook / "plan.json").write_text(json.dumps(data, indent=2))


def parse_dpkg_manifest(path: Path) -> dict[str, str]:
    """``{package: version}`` of installed packages from DIB's dpkg manifest."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BakeError(f"{path}: DIB wrote no dpkg manifest") from None
    except json.JSONDecodeError as exc:
        raise BakeError(f"{path}: DIB's dpkg manifest is not valid JSON: {exc}") from None
    return {p["package"]: p["version"] for p in data.get("packages", []) if str(p.get("status", "")).startswith("ii")}


def _log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a DIB log, without its shell tracing of environment files (pure noise)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    kept = [t for t in (strip_timestamp(x) for x in text)
            if not t.startswith(("+", "dib-run-parts Sourcing environment file"))]
    return "\n".join(kept[-lines:])


def _prune_root_cache(settings: Settings) -> None:
    try:
        for path in _root_cache(settings).prune():
            log.info("pre-role root cache: removed %s", path.name)
    except OSError as exc:  # a cache: never let its upkeep hide how the bake ended
        log.warning("could not prune the pre-role root cache: %s", exc)


def make_squashfs(paths: BakePaths, log_path: Path) -> None:
    """Squash the raw root filesystem DIB produced, through a read-only loop mount."""
    if not paths.raw.is_file():
        raise BakeError(f"DIB finished but produced no {paths.raw.name}", hint=f"see the log: {log_path}")
    paths.rootfs_mount.mkdir()
    run(["mount", "-o", "loop,ro,noload", paths.raw, paths.rootfs_mount], capture=True,
        what="mounting the image read-only")
    try:
        run(squashfs_command(paths.rootfs_mount, paths.squashfs), log_path=log_path, what="mksquashfs")
    finally:
        run(["umount", paths.rootfs_mount], check=False, capture=True)
    paths.raw.unlink()


def _record_inputs(plan: BakePlan, inv: DibInvocation) -> dict[str, Any]:
    return {
        "image": plan.image,
        "build_id": plan.build_id,
        "inputs": plan.inputs.as_dict(),
        "spec": plan.spec_json,
        "elements": list(plan.elements),
        "dib_env": inv.dib_env,
    }


def _tool_versions(plan: BakePlan) -> dict[str, str]:
    from importlib.metadata import version

    out = {"diskimage-builder": plan.inputs.dib_version, "golden": version("golden")}
    for dist in ("ansible-core", "ansible-runner", "ansible"):
        try:
            out[dist] = version(dist)
        except Exception:  # noqa: S112 - a missing tool is simply not recorded
            continue
    res = run(["mksquashfs", "-version"], check=False, capture=True)
    first = (res.stdout or "").splitlines()[:1]
    if first:
        out["mksquashfs"] = first[0]
    return out
