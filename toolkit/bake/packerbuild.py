"""The Packer builder for a ``builder: packer`` plan: the parent's root as a disk, packer + QEMU
running the layer's roles in the booted machine, sealing, and the same outputs as a DIB bake. It
only makes the root and its logs; the attempt (toolkit.bake.attempt: run record, interrupt,
rollback) and the collection (toolkit.bake.collect) are the engine's, as for DIB.

Steps, all inside the bake's staging folder (any failure or Ctrl-C rolls every one back):
unpack the parent build's rootfs.squashfs, add the bake-only files (the communicator's throwaway
key, an sshd drop-in, a DHCP network unit), make a partition-less ext4 disk of it (``mkfs.ext4
-d``: no mount), let packer boot it with the parent's kernel and initrd (direct kernel boot) and
run the roles through its ansible provisioner, then mount the disk it wrote, remove the bake-only
files and what the boot left (machine-id, journal, host keys the parent did not have), build the
initramfs once, run the bake-stage checks, and squash it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from toolkit.bake.attempt import Attempt
from toolkit.bake.checks import run_checks
from toolkit.bake.collect import Outputs
from toolkit.bake.dib import squashfs_command
from toolkit.bake.hook import playbook
from toolkit.bake.initramfs import InitramfsCache, adopt_initramfs, provide_initramfs
from toolkit.bake.packer import (
    AUTHORIZED_KEY,
    BAKE_ONLY,
    BOOT_LEFTOVERS,
    MIN_VERSION,
    NETWORK_UNIT,
    NETWORK_UNIT_TEXT,
    NETWORKD_LINK,
    NETWORKD_TARGET,
    SSHD_DROPIN,
    SSHD_DROPIN_TEXT,
    PackerOptions,
    PackerPaths,
    PackerWatch,
    packer_options,
    parse_version,
    template,
)
from toolkit.bake.plan import BakePlan, snapshot_epoch
from toolkit.core.config import Settings
from toolkit.core.errors import BakeError, CommandError, ToolMissingError
from toolkit.core.run import TAIL_LINES, describe, run, run_threaded, which
from toolkit.image.manifest import CheckResult
from toolkit.image.spec import CheckStage, ImageSpec, RoleRef
from toolkit.runs.record import RunRecord
from toolkit.store.artifacts import Build

log = logging.getLogger("golden.bake")

PACKER_TIMEOUT = 3600.0
DISK_HEADROOM_MB = 1536  # free space the roles get on the disk (apt installs, data)
AGENT_ROLE = "golden_agent"


class PackerStepError(CommandError):
    """A packer bake failed in a named step; carries the tail of its log (or of the serial console)."""


def options(settings: Settings) -> PackerOptions:
    """The packer options of golden.yaml and the environment."""
    return packer_options(settings.extra.get("packer"), dict(os.environ), which("packer"))


def packer_version(opts: PackerOptions) -> str:
    """``1.6.6``; ToolMissingError when packer is missing, BakeError when it is too old."""
    hint = f"install packer {'.'.join(map(str, MIN_VERSION))} or newer (apt-get install packer) or set GOLDEN_PACKER"
    try:
        res = run([opts.executable, "version"], check=False, capture=True, timeout=60.0,
                  env={"CHECKPOINT_DISABLE": "1"})  # never ask checkpoint.hashicorp.com
    except ToolMissingError:
        raise ToolMissingError(f"packer not found ({opts.executable})", hint=hint) from None
    found = parse_version(res.stdout or "")
    if res.returncode != 0 or found is None:
        raise BakeError(f"{opts.executable} version did not say which packer it is "
                        f"(exit {res.returncode}): {(res.stdout or res.stderr or '').strip()[:200]}", hint=hint)
    if found < MIN_VERSION:
        raise BakeError(f"packer {'.'.join(map(str, found))} at {opts.executable} is too old: "
                        f"builder: packer needs {'.'.join(map(str, MIN_VERSION))} or newer", hint=hint)
    return ".".join(map(str, found))


def machine_roles(spec: ImageSpec, layer: ImageSpec) -> tuple[RoleRef, ...]:
    """The roles the machine runs: the layer's own (the parent's already ran in its DIB bake), then
    the agent role again when the layer adds boot checks or drift paths (its config lists them)."""
    own = {r.name for r in layer.roles}
    roles = [r for r in spec.roles if r.name in own]
    adds_agent_config = any(c.stage is CheckStage.BOOT for c in layer.checks) or bool(layer.drift_allowlist)
    agent = [r for r in spec.roles if r.name == AGENT_ROLE and r.name not in own]
    return tuple(roles + (agent if adds_agent_config else []))


def run_packer(
    executable: str,
    verb: str,
    template: Path,
    *,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    grace: float = 60.0,
    flags: Mapping[str, str | bool] | None = None,
) -> int:
    """``packer VERB [flags] TEMPLATE`` through packerpy's PackerExecutable; return packer's exit code.

    packerpy buffers output until packer exits, so its stdout goes to ``log_path`` (its ``stdout``
    configuration) and core's ``run_threaded`` streams that file while packer runs; on Ctrl-C,
    SIGTERM or ``timeout`` packer gets SIGINT (it stops its QEMU and removes its output folder),
    then after ``grace`` everything below us is killed.
    """
    from packerpy import PackerExecutable  # only here: imported by bakes that use packer

    flags = dict(flags or {})
    described = describe([executable, verb, *(f"-{k.replace('_', '-')}={v}" for k, v in flags.items()),
                          str(template)])
    with open(log_path, "ab") as out:
        # stderr to the same open file: one stream, as stderr=STDOUT would make it
        packer = PackerExecutable(executable_path=executable, machine_readable=False,
                                  config={"stdout": out, "stderr": out})
        try:
            rc = run_threaded(lambda: packer.execute_cmd(verb, str(template), **flags)[0], log_path=log_path,
                              described=described, on_line=on_line, env=env, timeout=timeout, grace=grace)
        except FileNotFoundError:
            raise ToolMissingError(f"{executable} not found.", hint="install it: apt-get install packer") from None
    return int(rc)


# -- the disk ------------------------------------------------------------------------------------

def prepare_disk(paths: PackerPaths, parent: Build, record: RunRecord) -> int:
    """Unpack the parent's root, add the bake-only files, make the ext4 disk; return its size in MB."""
    run(["unsquashfs", "-no-progress", "-d", paths.root, parent.artifact("rootfs.squashfs")],
        log_path=record.stdout, what="unpacking the parent's rootfs.squashfs")
    _write(paths.root / AUTHORIZED_KEY, paths.key.with_suffix(".pub").read_text(), 0o644)
    _write(paths.root / SSHD_DROPIN, SSHD_DROPIN_TEXT, 0o644)
    _write(paths.root / NETWORK_UNIT, NETWORK_UNIT_TEXT, 0o644)
    link = paths.root / NETWORKD_LINK
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(NETWORKD_TARGET)
    used = int(run(["du", "-sxm", paths.root], capture=True).stdout.split()[0])
    size_mb = used + max(DISK_HEADROOM_MB, used // 2)
    run(["mkfs.ext4", "-q", "-F", "-L", "cloudimg-rootfs", "-d", paths.root, paths.disk, f"{size_mb}M"],
        log_path=record.stdout, what="making the ext4 disk")
    return size_mb


def make_key(paths: PackerPaths) -> None:
    """The communicator's throwaway key: only this bake's disk trusts it, and only until sealing."""
    paths.key.parent.mkdir(mode=0o700)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "golden-packer-bake", "-f", paths.key],
        capture=True, what="making the communicator's throwaway key")


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def seal(root: Path, parent_root: Path) -> None:
    """Remove the bake-only files and what the bake's boot wrote; the parent's versions come back.
    (SSH host keys go later, in drop_host_keys: the checks' ``sshd -T`` needs them, as under DIB.)"""
    for rel in BAKE_ONLY:
        (root / rel).unlink(missing_ok=True)
    for rel in BOOT_LEFTOVERS:
        _restore(root / rel, parent_root / rel)


def drop_host_keys(root: Path, parent_root: Path) -> None:
    """The SSH host keys the bake's boot made: every node makes its own (the parent has none)."""
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        if not (parent_root / "etc" / "ssh" / key.name).exists():
            key.unlink()


def _restore(path: Path, original: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    if original.exists() or original.is_symlink():
        # cp -a: owners, modes, xattrs as the parent has them (/var/log/journal is root:systemd-journal)
        run(["cp", "-a", "--no-target-directory", original, path], capture=True, what=f"restoring /{path.name}")


_INITRAMFS = (
    'r=$1; e=$2; mount -t proc proc "$r/proc" && mount -t sysfs sys "$r/sys" && mount --bind /dev "$r/dev" '
    '&& exec chroot "$r" env SOURCE_DATE_EPOCH="$e" update-initramfs -u -k all'
)


def initramfs_command(root: Path, epoch: int) -> list[str]:
    """update-initramfs in the sealed root, once, after the roles; its mounts die with the namespace."""
    return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", _INITRAMFS, "golden-initramfs",
            str(root), str(epoch)]


def _checks_with_dev_and_proc(checks: list[Any], root: Path) -> list[Any]:
    """The bake checks against the sealed root with /dev and /proc mounted in it, as DIB has them
    when its checks run (sshd -T wants /dev/null); a failure's rollback unmounts what is left."""
    run(["mount", "--bind", "/dev", root / "dev"], capture=True, what="mounting /dev for the checks")
    try:
        run(["mount", "-t", "proc", "proc", root / "proc"], capture=True, what="mounting /proc for the checks")
        try:
            return run_checks(checks, root)
        finally:
            run(["umount", root / "proc"], check=False, capture=True)
    finally:
        run(["umount", root / "dev"], check=False, capture=True)


def installed_packages(root: Path) -> dict[str, str]:
    """``{package: version}`` of the packages installed in ``root``."""
    fmt = "${binary:Package}\\t${Version}\\t${db:Status-Abbrev}\\n"
    res = run(["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "--show", f"--showformat={fmt}"],
              capture=True, what="listing the image's packages")
    out = {}
    for line in res.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2].startswith("ii"):
            out[parts[0]] = parts[1]
    return out


def _one(root: Path, pattern: str, what: str) -> Path:
    found = sorted(p for p in (root / "boot").glob(pattern) if p.is_file())
    if len(found) != 1:
        raise BakeError(f"the baked root has {len(found)} {what} under /boot ({', '.join(p.name for p in found)}); "
                        "expected exactly one")
    return found[0]


# -- the bake ------------------------------------------------------------------------------------

class PackerBuilder:
    """One packer bake of ``plan`` on ``parent``: ``produce`` boots the parent's root, runs the roles, seals it."""

    name = "packer"

    def __init__(self, settings: Settings, plan: BakePlan, parent: Build, opts: PackerOptions) -> None:
        self.settings, self.plan, self.parent, self.opts = settings, plan, parent, opts
        self.watch = PackerWatch()
        self.attempt: Attempt | None = None
        self.packer_seconds: float | None = None
        self.tmp: Path | None = None

    def _tmp(self) -> Path:
        if self.tmp is None:
            self.tmp = Path(tempfile.mkdtemp(prefix="golden-packer-"))
        return self.tmp

    @property
    def phase(self) -> str:
        """Where the bake stands."""
        return self.attempt.phase if self.attempt else "starting"

    def set_phase(self, phase: str) -> None:
        """Say where the bake stands."""
        if self.attempt:
            self.attempt.set_phase(phase)

    def _on_line(self, line: str) -> None:
        phase = self.watch.on_line(line)
        if phase:
            self.set_phase(phase)

    def produce(self, attempt: Attempt) -> Outputs:
        """Boot the parent's root, run the roles, seal and squash it."""
        self.attempt = attempt
        attempt.cleanup.callback(self._remove_tmp)
        paths = PackerPaths(attempt.staged / "work")
        attempt.on_failure.append(lambda: _keep_serial_log(paths, attempt.record))
        return self._steps(paths, attempt.staged, attempt.record)

    def explain(self, exc: Exception, attempt: Attempt) -> Exception:
        """Packer's failures are explained where they happen (``_failure``): shown as they are."""
        return exc

    def _remove_tmp(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _steps(self, paths: PackerPaths, staged: Path, record: RunRecord) -> Outputs:
        plan = self.plan
        paths.work.mkdir(parents=True)
        make_key(paths)
        paths.playbook.write_text(yaml.safe_dump(self._playbook(), sort_keys=False))
        tpl = template(paths, self.opts, kernel=self.parent.artifact("vmlinuz"),
                       initrd=self.parent.artifact("initrd"), disk_mb=DISK_HEADROOM_MB,
                       ansible_playbook=str(Path(_python()).with_name("ansible-playbook")),
                       roles_dir=self.settings.roles_dir)
        self._write_template(paths, tpl)
        record.start(f"{self.opts.executable} build -color=false {paths.template}",
                     {"image": plan.image, "build_id": plan.build_id, "inputs": plan.inputs.as_dict(),
                      "spec": plan.spec_json, "parent": self.parent.build_id, "template": tpl})
        self.set_phase("packer validate")
        self._packer(paths, record, "validate")
        self.set_phase("preparing the disk (unsquashfs, mkfs.ext4 -d)")
        size_mb = prepare_disk(paths, self.parent, record)
        tpl["builders"][0]["disk_size"] = f"{size_mb}M"
        self._write_template(paths, tpl)
        self.set_phase("packer build")
        t0 = time.monotonic()
        self._packer(paths, record, "build")
        self.packer_seconds = time.monotonic() - t0
        self.set_phase("sealing")
        return self._seal(paths, staged, record, tpl)

    def _playbook(self) -> list[dict[str, Any]]:
        spec = self.plan.spec
        return playbook([{"name": r.name, "vars": r.vars} for r in self.plan.machine_roles],
                        [c.model_dump(mode="json", exclude_none=True) for c in spec.checks
                         if c.stage is CheckStage.BOOT], list(spec.drift_allowlist))

    @staticmethod
    def _write_template(paths: PackerPaths, tpl: dict[str, Any]) -> None:
        paths.template.write_text(json.dumps(tpl, indent=2) + "\n")

    def _packer(self, paths: PackerPaths, record: RunRecord, verb: str) -> None:
        # TMPDIR short: packer's plugins listen on unix sockets there (108 bytes at most for the path)
        env = {"CHECKPOINT_DISABLE": "1", "PACKER_CACHE_DIR": str(paths.work / "packer-cache"),
               "TMPDIR": str(self._tmp())}
        # packer 1.6: build has -color, validate has not
        flags: dict[str, str | bool] = {"color": "false"} if verb == "build" else {}
        rc = run_packer(self.opts.executable, verb, paths.template, log_path=record.stdout, on_line=self._on_line,
                        env=env, timeout=PACKER_TIMEOUT, flags=flags)
        if rc != 0:
            raise self._failure(paths, record, verb, rc)

    def _failure(self, paths: PackerPaths, record: RunRecord, verb: str, rc: int) -> PackerStepError:
        image, w = self.plan.image, self.watch
        if w.ssh_timeout:
            return PackerStepError(
                f"bake of {image} failed: the machine did not reach SSH within {self.opts.ssh_timeout_s} s",
                returncode=rc, log_tail=_tail(paths.serial_log),
                hint=f"the lines above are the end of its serial console ({record.path / 'serial.log'}); "
                     f"full packer log: {record.stdout}")
        if w.failure:
            return PackerStepError(f"bake of {image} failed in the machine: {w.failure}", returncode=rc,
                                   log_tail=_tail(record.stdout), hint=f"full log: {record.stdout}")
        if verb == "validate":
            said = rejection(_tail(record.stdout, 20)) or f"exit {rc}"
            return PackerStepError(f"bake of {image} failed: packer rejected the template: {said}",
                                   returncode=rc, hint=f"the template is in {record.path / 'inputs.json'}")
        return PackerStepError(f"bake of {image} failed in {self.phase} (packer {verb} exit {rc})", returncode=rc,
                               log_tail=_tail(record.stdout), hint=f"full log: {record.stdout}")

    def _seal(self, paths: PackerPaths, staged: Path, record: RunRecord, tpl: dict[str, Any]) -> Outputs:
        plan, mnt = self.plan, paths.mount
        mnt.mkdir()
        run(["mount", "-o", "loop", paths.baked_disk, mnt], capture=True, what="mounting the baked disk")
        try:
            seal(mnt, paths.root)
            self.set_phase("initramfs (once, after the roles)")
            epoch, cache = snapshot_epoch(plan.inputs.snapshot), InitramfsCache(self.settings.cache / "initramfs")
            adopt_initramfs(paths.root, epoch, cache)  # the parent's, for a layer that leaves its inputs alone
            how = provide_initramfs(mnt, epoch, cache, lambda: run(initramfs_command(mnt, epoch),
                                                                   log_path=record.stdout, what="update-initramfs"))
            _append(record.stdout, f"golden: initramfs {how}")
            self.set_phase("bake checks")
            outcomes = _checks_with_dev_and_proc(list(plan.bake_checks), mnt)
            drop_host_keys(mnt, paths.root)
            for o in outcomes:
                _append(record.stdout, f"golden: check {o.name}: {'passed' if o.passed else 'FAILED'} ({o.detail})")
            failed = [o for o in outcomes if not o.passed]
            if failed:
                names = ", ".join(f"{o.name} ({o.detail.splitlines()[0] if o.detail else 'failed'})" for o in failed)
                raise BakeError(f"bake of {plan.image} failed in the bake checks: {names}",
                                hint=f"full log: {record.stdout}")
            packages = installed_packages(mnt)
            shutil.copyfile(_one(mnt, "vmlinuz-*", "kernels"), staged / "vmlinuz")
            shutil.copyfile(_one(mnt, "initrd.img-*", "initrds"), staged / "initrd")
            self.set_phase("squashfs (zstd)")
            run(squashfs_command(mnt, staged / "rootfs.squashfs"), log_path=record.stdout, what="mksquashfs")
        finally:
            run(["umount", mnt], check=False, capture=True)
        return self._outputs(paths, staged, record, tpl, packages,
                             {o.name: CheckResult(passed=o.passed, detail=o.detail) for o in outcomes})

    def _outputs(self, paths: PackerPaths, staged: Path, record: RunRecord, tpl: dict[str, Any],
                 packages: dict[str, str], checks: dict[str, CheckResult]) -> Outputs:
        pm = self.parent.manifest
        logs = [(record.stdout, "packer.log")] + ([(paths.serial_log, "serial.log")] if paths.serial_log.is_file()
                                                   else [])
        return Outputs(
            builder="packer", work=paths.work,
            artifacts={name: staged / name for name in ("rootfs.squashfs", "vmlinuz", "initrd")},
            logs=logs + [(paths.template, "packer-template.json"), (paths.playbook, "packer-playbook.yml")],
            packages=packages,
            package_archives={k: v for k, v in pm.package_archives.items() if packages.get(k) == pm.packages.get(k)},
            checks=checks, tool_versions=self._tool_versions(), dib_env=dict(pm.dib_env),
            manifest_extra={"builder": "packer", "parent_build": self.parent.build_id, "packer_template": tpl},
            timings={"packer_seconds": self.packer_seconds})

    def _tool_versions(self) -> dict[str, str]:
        out = {k: v for k, v in self.parent.manifest.tool_versions.items() if k != "golden"}
        from importlib.metadata import version

        out["golden"] = version("golden")
        out["packer"] = self.plan.inputs.packer_version
        res = run(["qemu-system-x86_64", "--version"], check=False, capture=True)
        first = (res.stdout or "").splitlines()[:1]
        if first:
            out["qemu"] = first[0]
        return out


def rejection(output: str) -> str:
    """packer validate's complaints (its ``* ...`` lines, wrapped at 80 columns) as one line."""
    items: list[str] = []
    for line in output.splitlines():
        text = line.strip()
        if text.startswith("* "):
            items.append(text[2:])
        elif text and items and not text.startswith(("Error:", "Warning:")):
            items[-1] += " " + text
    if not items:  # not a configuration error: packer's last words, whatever they are
        items = [" ".join(x.strip() for x in output.splitlines() if x.strip())[-400:]]
    return "; ".join(i for i in items if i)


def _keep_serial_log(paths: PackerPaths, record: RunRecord) -> None:
    """The machine's console outlives the staging folder in the run record (a cache of evidence)."""
    try:
        if paths.serial_log.is_file():
            shutil.copyfile(paths.serial_log, record.path / "serial.log")
    except OSError as exc:
        log.warning("could not keep the serial log: %s", exc)


def _python() -> str:
    import sys

    return sys.executable


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
