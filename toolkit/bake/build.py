"""Acting on a bake plan: run DIB into a staging folder, collect artifacts, write the manifest,
commit to the store. Any failure or interruption rolls everything back.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import toolkit
from toolkit.bake import cleanup
from toolkit.bake.aptsources import Mirrors, host_mirrors
from toolkit.bake.dib import (
    BakePaths,
    DibInvocation,
    dib_command,
    parse_failure,
    parse_phase,
    squashfs_command,
    strip_timestamp,
)
from toolkit.bake.plan import BakePlan, dib_version, plan_bake, snapshot_epoch, snapshot_stamp
from toolkit.bake.record import RunRecord, new_bake_run_id
from toolkit.bake.rootcache import RootCache, RootLease, capturing, from_cache, pre_role_key, shadow_elements
from toolkit.core.config import Settings
from toolkit.core.errors import BakeError, CommandError, InputError, StoreError
from toolkit.core.fsutil import sha256_file
from toolkit.core.progress import Progress
from toolkit.core.run import TAIL_LINES, run
from toolkit.image.fields import check_mirror_url
from toolkit.image.manifest import Artifact, CheckResult, Manifest
from toolkit.image.spec import Builder, CheckStage, ImageSpec, load_image, load_layer
from toolkit.store import open_store
from toolkit.store.artifacts import Build, Store

log = logging.getLogger("golden.bake")

DIB_TIMEOUT = 3600.0
ARTIFACT_SOURCES = (("rootfs.squashfs", "squashfs"), ("vmlinuz", "vmlinuz"), ("initrd", "initrd"))


class BakeStepError(CommandError):
    """A bake failed in a named step; carries the tail of that step's log."""


@dataclass(frozen=True)
class BakeResult:
    build: Build
    cache_hit: bool
    seconds: float
    run_id: str | None = None
    run_dir: Path | None = None
    dib_seconds: float | None = None  # of ``seconds``, how long disk-image-create itself ran
    pre_role_root: str | None = None  # key of the cached pre-role root the bake started from
    packer_seconds: float | None = None  # builder: packer: of ``seconds``, how long packer build ran


@dataclass
class _Watch:
    """What we learn from DIB's output while it runs."""

    progress: Progress | None
    phase: str = "starting"
    failure: str | None = None
    phases: list[str] = field(default_factory=list)

    def past(self, phase: str) -> bool:
        """True once DIB has moved on from ``phase`` (so whatever it wrote is complete)."""
        return phase in self.phases and self.phases[-1] != phase

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.phases.append(phase)
        if self.progress:
            self.progress.phase(phase)

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
    main = spec.base.mirror or _configured_mirror(settings.mirror, "mirror", "GOLDEN_MIRROR")
    security = spec.base.security_mirror or _configured_mirror(
        settings.security_mirror, "security_mirror", "GOLDEN_SECURITY_MIRROR")
    if main and security:
        return Mirrors(main=main, security=security)
    host = host_mirrors(spec.base.release)
    return Mirrors(main=main or host.main, security=security or host.security)


def make_plan(settings: Settings, spec: ImageSpec, store: Store, refresh: bool, rebuild: str = "") -> BakePlan:
    stamp = snapshot_stamp(store.snapshot(spec.name), refresh)
    return plan_bake(spec, settings.roles_dir, dib_version(), stamp, refresh=refresh,
                     project_elements=settings.project / "elements", rebuild=rebuild)


def bake_image(settings: Settings, name: str, *, force: bool = False, refresh: bool = False,
               root_cache: bool = True, progress: Progress | None = None) -> BakeResult:
    """Bake image spec ``name``, or return the stored build of identical inputs.

    ``force`` bakes the same inputs again under a new build id (a rebuild stamp joins the inputs):
    a stored build's bytes never change, whoever points at it.

    A bake starts from the cached pre-role root of its inputs when there is one (only roles, role
    vars or checks changed since it was captured; see toolkit.bake.rootcache), unless
    ``root_cache`` is off or it is ``force``d or a ``refresh``: those run every DIB phase and
    capture the root afresh. Either way the build id is the same.

    A ``builder: packer`` spec bakes its parent (``extends``) first, as any bake (a cache hit when
    it is stored), then boots that build's root in a QEMU machine (toolkit.bake.packerbuild).
    """
    started = time.monotonic()
    if progress:
        progress.phase("planning (hashing the inputs)")
    spec = load_image(name, settings.images_dir, settings.roles_dir)
    store = open_store(settings)
    if spec.builder is Builder.PACKER:
        return _bake_packer(settings, spec, store, force=force, refresh=refresh, root_cache=root_cache,
                            progress=progress, started=started)

    def plan_for(rebuild: str) -> BakePlan:
        return make_plan(settings, spec, store, refresh, rebuild=rebuild)

    def execute(plan: BakePlan) -> BakeResult:
        return _execute(settings, store, plan, progress, started,
                        use_root_cache=root_cache and not (force or refresh))

    return _cached_or_baked(store, spec.name, plan_for, execute, force=force, refresh=refresh,
                            progress=progress, started=started)


def _cached_or_baked(store: Store, image: str, plan_for: Callable[[str], BakePlan],
                     execute: Callable[[BakePlan], BakeResult], *, force: bool, refresh: bool,
                     progress: Progress | None, started: float) -> BakeResult:
    """The stored build of the plan's id, or ``execute`` under the image's store lock."""
    if not (force or refresh):
        hit = store.find(image, plan_for("").build_id)
        if hit is not None:
            if progress:
                progress.phase(f"cache hit: {hit.build_id} is already stored")
            return BakeResult(build=hit, cache_hit=True, seconds=time.monotonic() - started)
    with store.lock(image):
        # Re-plan under the lock: a bake that finished meanwhile may have moved the snapshot stamp.
        plan = plan_for(datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") if force else "")
        if not (force or refresh):
            hit = store.find(image, plan.build_id)
            if hit is not None:
                return BakeResult(build=hit, cache_hit=True, seconds=time.monotonic() - started)
        for stale in store.stale_staging(image):
            log.warning("removing %s left by an earlier bake that was killed", stale)
            cleanup.release(stale)
            store.discard(stale)
        return execute(plan)


def _bake_packer(settings: Settings, spec: ImageSpec, store: Store, *, force: bool, refresh: bool,
                 root_cache: bool, progress: Progress | None, started: float) -> BakeResult:
    from toolkit.bake import packerbuild  # only here: DIB bakes never pay for it

    layer = load_layer(spec.name, settings.images_dir)
    assert layer.extends is not None  # the spec model requires it of a packer layer
    opts = packerbuild.options(settings)
    version = packerbuild.packer_version(opts)  # before the parent's bake: a missing packer fails fast
    parent = bake_image(settings, layer.extends, refresh=refresh, root_cache=root_cache, progress=progress).build
    roles = packerbuild.machine_roles(spec, layer)

    def plan_for(rebuild: str) -> BakePlan:
        return plan_bake(spec, settings.roles_dir, str(parent.manifest.inputs.get("dib_version", "")),
                         str(parent.manifest.inputs["snapshot"]), project_elements=settings.project / "elements",
                         refresh=refresh, rebuild=rebuild, parent_build=parent.build_id, packer_version=version,
                         machine_roles=roles)

    def execute(plan: BakePlan) -> BakeResult:
        bake = packerbuild.PackerBake(settings, store, plan, parent, opts, progress)
        result: BakeResult = bake.perform(started, BakeResult)
        return result

    return _cached_or_baked(store, spec.name, plan_for, execute, force=force, refresh=refresh,
                            progress=progress, started=started)


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


def _root_cache(settings: Settings) -> RootCache:
    return RootCache(settings.cache / "pre-role")


def _execute(settings: Settings, store: Store, plan: BakePlan, progress: Progress | None, started: float,
             *, use_root_cache: bool = True) -> BakeResult:
    run_id = new_bake_run_id("bake", plan.image)
    record = RunRecord.create(settings.runs_dir, run_id)
    staged = store.stage(plan.image, run_id)
    paths = BakePaths(staged / "work")
    watch = _Watch(progress)
    lease: _CacheLease | None = None
    root: RootLease | None = None
    status, rc, error = "failed", None, None
    try:
        for d in (paths.tmp, paths.out):
            d.mkdir(parents=True)
        mirrors = resolve_mirrors(plan.spec, settings)
        lease = _prepare_cache(settings, paths, plan)
        _write_hook_plan(paths, plan, settings)
        inv = dib_command(plan, paths, mirrors, use_debootstrap_cache=lease.use_tarball,
                          project=Path(toolkit.__file__).resolve().parent.parent)
        key = pre_role_key(plan, inv)
        root = _root_cache(settings).lease(key) if use_root_cache else None
        if root is not None:
            inv = from_cache(inv, shadow_elements(plan.elements, plan.elements_path, paths.work / "shadow-elements"),
                             root.path)
            watch.set_phase(f"from cached pre-role root {key}")
        else:
            inv = capturing(inv, _root_cache(settings).path(key))
        record.start(inv.describe(), {**_record_inputs(plan, inv),
                                      "pre_role_root": {"key": key, "restored": root is not None}})
        try:
            dib_started = time.monotonic()
            run(inv.argv, env=inv.env, log_path=record.stdout, on_line=watch.on_line, timeout=DIB_TIMEOUT,
                what="disk-image-create")
            dib_seconds = time.monotonic() - dib_started
            _promote_tarball(paths, lease.shared_tarball)
            watch.set_phase("squashfs (zstd)")
            make_squashfs(paths, record.stdout)
            build = _collect(store, plan, paths, staged, record, inv, started)
            store.set_snapshot(plan.image, plan.inputs.snapshot)
        except CommandError as exc:
            rc = exc.returncode
            step = watch.failure or f"DIB step {watch.phase}"
            raise BakeStepError(
                f"bake of {plan.image} failed in {step} ({exc.message})",
                returncode=exc.returncode, log_tail=_log_tail(record.stdout),
                hint=f"full log: {record.stdout}",
            ) from None
        except OSError as exc:  # out of disk, most likely, in the store or the runs folder
            where = f" ({exc.filename})" if exc.filename else ""
            raise BakeStepError(
                f"bake of {plan.image} failed in {watch.failure or 'DIB step ' + watch.phase}: "
                f"{exc.strerror or exc}{where}",
                returncode=1, log_tail=_log_tail(record.stdout), hint=f"full log: {record.stdout}",
            ) from None
        status, rc = "succeeded", 0
        return BakeResult(build=build, cache_hit=False, seconds=time.monotonic() - started,
                          run_id=run_id, run_dir=record.path, dib_seconds=dib_seconds,
                          pre_role_root=root.key if root else None)
    except KeyboardInterrupt:
        status, error = "interrupted", f"interrupted during {watch.phase}"
        raise
    except BaseException as exc:
        error = getattr(exc, "message", None) or repr(exc)
        raise
    finally:
        if status != "succeeded":
            # A second Ctrl-C must not cut the rollback short: hold signals until it is done.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                if lease is not None and watch.past("root.d/08-debootstrap"):
                    # The tarball is whole once DIB moved past that step, even if a later one failed.
                    _promote_tarball(paths, lease.shared_tarball)
                left = cleanup.release(staged)
                if left:
                    error = f"{error}; {len(left)} mount(s) could not be removed: {', '.join(left)}"
                    log.error("bake left mounts behind: %s", ", ".join(left))
                else:
                    store.discard(staged)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if lease is not None:
            lease.release()
        if root is not None:
            root.release()
        _prune_root_cache(settings)
        record.finish(status, rc, error)


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


def _collect(store: Store, plan: BakePlan, paths: BakePaths, staged: Path, record: RunRecord,
             inv: DibInvocation, started: float) -> Build:
    sources = {"squashfs": paths.squashfs, "vmlinuz": paths.vmlinuz, "initrd": paths.initrd}
    artifacts: dict[str, Artifact] = {}
    for name, key in ARTIFACT_SOURCES:
        src = sources[key]
        if not src.is_file() or src.stat().st_size == 0:
            raise BakeError(f"bake of {plan.image}: DIB finished but produced no {src.name}",
                            hint=f"see the log: {record.stdout}")
        dest = staged / name
        src.rename(dest)
        dest.chmod(0o644)
        artifacts[name] = Artifact(sha256=sha256_file(dest), size=dest.stat().st_size)
    packages = parse_dpkg_manifest(paths.dpkg_manifest)
    if not packages:
        raise BakeError(f"bake of {plan.image}: the dpkg manifest lists no installed packages")
    origins_file = paths.origins_result
    archives = json.loads(origins_file.read_text()) if origins_file.is_file() else {}
    checks_file = paths.checks_result
    checks = {k: CheckResult(**v) for k, v in json.loads(checks_file.read_text()).items()} \
        if checks_file.is_file() else {}
    logs = staged / "logs"
    logs.mkdir()
    shutil.copyfile(record.stdout, logs / "dib.log")
    ansible_artifacts = paths.hook / "ansible" / "artifacts"
    if ansible_artifacts.is_dir():
        shutil.copytree(ansible_artifacts, logs / "ansible", symlinks=True)
    left = cleanup.release(staged)
    if left:
        raise StoreError(f"bake of {plan.image}: mounts left under the staging folder: {', '.join(left)}")
    shutil.rmtree(paths.work)
    manifest = Manifest(
        image=plan.image,
        build_id=plan.build_id,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        spec=plan.spec_json,
        inputs=plan.inputs.as_dict(),
        artifacts=artifacts,
        packages=packages,
        # DIB names multi-arch packages name:arch, dpkg's status by name alone
        package_archives={k: archives[k.split(":", 1)[0]] for k in packages if k.split(":", 1)[0] in archives},
        roles=dict(plan.inputs.roles),
        tool_versions=_tool_versions(plan),
        dib_env=dict(inv.dib_env),
        bake_seconds=round(time.monotonic() - started, 1),
        checks=checks,
    )
    manifest.write(staged / "manifest.json")
    return store.commit(plan.image, plan.build_id, staged)


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
