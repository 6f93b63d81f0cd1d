"""Entry point of our DIB hooks (``python -m toolkit.bake.hook roles|checks|capture|restore|initramfs``).

DIB runs it outside the chroot: ``roles``, ``initramfs``, ``checks`` and ``capture`` from ``post-root.d``, with the
chroot complete and ``/proc``, ``/dev`` mounted in it; ``restore`` from ``root.d``, into the empty
root of a bake that starts from a cached pre-role root (see toolkit.bake.rootcache). The bake
writes ``plan.json`` into the hook folder beforehand; results go back as JSON files next to it.
A failure prints one marker line naming the step, which the bake picks out of DIB's log for its
error message.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from toolkit.bake.checks import run_checks
from toolkit.bake.dib import FAIL_MARK
from toolkit.bake.initramfs import InitramfsCache, kernel_versions, provide_initramfs
from toolkit.bake.origins import read_origins
from toolkit.bake.rootcache import capture_command, restore_command
from toolkit.core.errors import CommandError
from toolkit.core.run import run
from toolkit.image.spec import Check

REMOTE_TMP = "/tmp/.golden-ansible"  # inside the chroot; DIB empties /tmp when it finalises


def _fail(step: str) -> int:
    print(f"{FAIL_MARK}{step}", flush=True)
    return 1


def playbook(roles: list[dict[str, Any]], boot_checks: list[dict[str, Any]] | None = None,
             drift_allowlist: list[str] | None = None) -> list[dict[str, Any]]:
    """The bake-time playbook: the roles in order, with the agent's boot checks and drift allowlist."""
    return [{
        "name": "bake-time roles",
        "hosts": "image",
        "gather_facts": True,
        "vars": {
            # The image's boot-stage health checks, for the agent to run on the booted node.
            "golden_boot_checks": boot_checks or [],
            # The image's own paths that change at run time (the agent adds them to its small list).
            "golden_drift_allowlist": drift_allowlist or [],
            # post-root.d/60-golden-initramfs builds the initramfs once, after all roles.
            "golden_initramfs_deferred": True,
        },
        "roles": [{"role": r["name"], "vars": r.get("vars", {})} for r in roles],
    }]


def run_roles(target: Path, hook_dir: Path) -> int:
    """Run the plan's roles into the chroot ``target`` (DIB's post-root hook); the exit code."""
    plan = json.loads((hook_dir / "plan.json").read_text())
    roles: list[dict[str, Any]] = plan["roles"]
    result_path = hook_dir / "roles.json"
    if not roles:
        print("golden: the spec lists no roles", flush=True)
        result_path.write_text("{}")
        return 0

    import ansible_runner  # only here: the CLI must not pay for it on a cache hit

    private = hook_dir / "ansible"
    (private / "project").mkdir(parents=True, exist_ok=True)
    site = playbook(roles, plan.get("boot_checks"), plan.get("drift_allowlist"))
    (private / "project" / "site.yml").write_text(json.dumps(site, indent=2))
    home = hook_dir / "ansible-home"
    envvars = {
        "ANSIBLE_ROLES_PATH": plan["roles_dir"],
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_REMOTE_TMP": REMOTE_TMP,
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        # DIB runs its hooks with LC_ALL=C; Ansible refuses to start without a UTF-8 locale.
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    inventory = {"all": {"hosts": {"image": {
        "ansible_connection": "community.general.chroot",
        "ansible_host": str(target),
        "ansible_python_interpreter": "/usr/bin/python3",
    }}}}
    failures: list[str] = []

    def on_event(event: dict[str, Any]) -> bool:
        if event.get("event") in ("runner_on_failed", "runner_on_unreachable"):
            data = event.get("event_data", {})
            if data.get("ignore_errors"):
                return True
            res = data.get("res", {}) or {}
            msg = str(res.get("msg") or res.get("stderr") or "").strip().splitlines()
            role = data.get("role") or "?"
            failures.append(f"role {role}, task {data.get('task', '?')!r}: {msg[0] if msg else 'failed'}")
        return True

    try:
        r = ansible_runner.run(
            private_data_dir=str(private),
            playbook="site.yml",
            inventory=inventory,
            envvars=envvars,
            event_handler=on_event,
            quiet=False,
            json_mode=False,
        )
    finally:
        shutil.rmtree(target / "root" / ".ansible", ignore_errors=True)
        shutil.rmtree(target / REMOTE_TMP.lstrip("/"), ignore_errors=True)
    if r.rc != 0 or r.status != "successful":
        step = failures[0] if failures else f"ansible-runner ended {r.status} (rc {r.rc})"
        return _fail(f"post-root.d/50-golden-roles: {step}")
    result_path.write_text(json.dumps({ref["name"]: "ok" for ref in roles}))
    return 0


def run_bake_checks(target: Path, hook_dir: Path) -> int:
    """Record package origins and run the bake checks in ``target`` (DIB hook); the exit code."""
    # Here, before DIB's cleanup empties apt's lists: which archive each package came from.
    (hook_dir / "packages.json").write_text(json.dumps(read_origins(target), indent=1, sort_keys=True))
    plan = json.loads((hook_dir / "plan.json").read_text())
    checks = [Check.model_validate(c) for c in plan["checks"]]
    outcomes = run_checks(checks, target)
    (hook_dir / "checks.json").write_text(json.dumps(
        {o.name: {"passed": o.passed, "detail": o.detail} for o in outcomes}, indent=2))
    for o in outcomes:
        print(f"golden: check {o.name}: {'passed' if o.passed else 'FAILED'} ({o.detail})", flush=True)
    failed = [o for o in outcomes if not o.passed]
    if failed:
        names = ", ".join(f"{o.name} ({o.detail.splitlines()[0] if o.detail else 'failed'})" for o in failed)
        return _fail(f"post-root.d/70-golden-checks: check(s) failed: {names}")
    return 0


def capture_root(target: Path, hook_dir: Path, dest: Path) -> int:
    """Archive the pre-role root to ``dest``: written aside, renamed into place when whole.

    A cache, so failing to write it (a full disk) only costs the next bake its head start: the
    bake goes on."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    mountpoint = hook_dir / "capture-mnt"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        mountpoint.mkdir(exist_ok=True)
        run(capture_command(target, mountpoint, tmp), capture=True, what="archiving the pre-role root")
        tmp.replace(dest)
    except (CommandError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        print(f"golden: the pre-role root was not cached: {getattr(exc, 'message', None) or exc}", flush=True)
        return 0
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"golden: cached the pre-role root as {dest.name}", flush=True)
    return 0


def build_initramfs(target: Path, hook_dir: Path) -> int:
    """Every kernel's initramfs in ``target`` (DIB hook, once, after the roles): the stored one when
    its inputs are unchanged (toolkit.bake.initramfs), else update-initramfs; the exit code."""
    plan = json.loads((hook_dir / "plan.json").read_text())
    epoch = int(plan["source_date_epoch"])

    def update() -> None:
        for version in kernel_versions(target):
            flag = "-u" if (target / "boot" / f"initrd.img-{version}").exists() else "-c"
            run(["chroot", target, "env", f"SOURCE_DATE_EPOCH={epoch}", "update-initramfs", flag, "-k", version],
                what="update-initramfs")

    if not kernel_versions(target):
        return _fail("post-root.d/60-golden-initramfs: no kernel installed in the image")
    try:
        how = provide_initramfs(target, epoch, InitramfsCache(Path(plan["initramfs_cache"])), update)
    except CommandError as exc:
        return _fail(f"post-root.d/60-golden-initramfs: {exc.message}: {exc.log_tail}")
    print(f"golden: initramfs {how}", flush=True)
    return 0


def restore_root(target: Path, tarball: Path) -> int:
    """Unpack the cached pre-role root into ``target`` (DIB hook); the exit code."""
    print(f"golden: from cached pre-role root {tarball.name.split('.', 1)[0]}", flush=True)
    try:
        run(restore_command(tarball, target), capture=True, what="restoring the cached pre-role root")
    except CommandError as exc:
        return _fail(f"root.d/01-golden-restore-root: {exc.message}: {exc.log_tail}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The DIB hooks' entry point: ``roles``, ``checks``, ``capture`` or ``restore``."""
    parser = argparse.ArgumentParser(prog="python -m toolkit.bake.hook")
    parser.add_argument("step", choices=("roles", "checks", "capture", "restore", "initramfs"))
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--hook-dir", type=Path, required=True)
    parser.add_argument("--tarball", type=Path, help="capture/restore: the pre-role root archive")
    args = parser.parse_args(argv)
    if args.step in ("capture", "restore") and args.tarball is None:
        parser.error(f"{args.step} needs --tarball")
    if args.step == "roles":
        return run_roles(args.target, args.hook_dir)
    if args.step == "capture":
        return capture_root(args.target, args.hook_dir, args.tarball)
    if args.step == "restore":
        return restore_root(args.target, args.tarball)
    if args.step == "initramfs":
        return build_initramfs(args.target, args.hook_dir)
    return run_bake_checks(args.target, args.hook_dir)


if __name__ == "__main__":
    sys.exit(main())
