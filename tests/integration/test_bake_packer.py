"""Real ``builder: packer`` bakes: Debian's packer 1.6 + QEMU (TCG) booting the DIB-baked base.

One real bake of images/seeded.yaml (``baked_seeded``, cached by build id in the shared test store)
proves the outputs; its boot is tests/e2e/test_packer_boot.py. The failure tests work in a throwaway
state home that holds the base build by hard links (so the parent is a cache hit) and a copy of
the project: a changed kvstore role whose first task fails (a new build id: the "role change
rebuilds" proof, stopped early), an SSH timeout of a few seconds, Ctrl-C while QEMU runs, and
packer missing / too old / rejecting the template, which never start QEMU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.bake import bake_home, packer_project
from tests.fixtures.common import ROOT
from toolkit.bake.packer import AUTHORIZED_KEY, NETWORK_UNIT, SSHD_DROPIN
from toolkit.core.mounts import mounts_under
from toolkit.store.artifacts import Build, Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

GOLDEN = [sys.executable, "-c", "import sys; from toolkit.cli import main; sys.exit(main())"]
SEED = "hello from a packer bake"


def _listing(build: Build) -> str:
    return subprocess.run(["unsquashfs", "-l", str(build.artifact("rootfs.squashfs"))],
                          capture_output=True, text=True, check=True).stdout


def test_packer_bake_outputs_like_a_dib_bake(baked_seeded: Build, baked_base: Build, tmp_path: Path) -> None:
    m = baked_seeded.manifest
    assert m.builder == "packer" and m.parent_build == baked_base.build_id
    assert m.inputs["parent_build"] == baked_base.build_id and m.inputs["packer_version"] == "1.6.6"
    assert set(m.artifacts) == {"vmlinuz", "initrd", "rootfs.squashfs"}
    for name, art in m.artifacts.items():
        assert baked_seeded.artifact(name).stat().st_size == art.size > 0
    assert baked_seeded.artifact("rootfs.squashfs").read_bytes()[:4] == b"hsqs"
    assert m.tool_versions["packer"] == "1.6.6" and "diskimage-builder" in m.tool_versions
    assert set(m.roles) == {"netboot", "hardening", "golden_agent", "kvstore"}
    assert m.packages["openssh-server"] == baked_base.manifest.packages["openssh-server"]
    assert set(m.checks) == {"agent-enabled", "ssh-no-passwords", "kvstore-enabled", "kvstore-seeded"}
    assert all(c.passed for c in m.checks.values()), m.checks
    assert m.packer_template is not None
    builder = m.packer_template["builders"][0]
    assert builder["accelerator"] == "tcg" and builder["type"] == "qemu"
    assert (baked_seeded.logs / "packer.log").stat().st_size > 0
    assert (baked_seeded.logs / "packer-template.json").is_file()
    # the roles ran in a booted machine: the seed went through the running service
    log = (baked_seeded.logs / "packer.log").read_text(errors="replace")
    assert "TASK [kvstore : Seed the data through the running service]" in log
    # sealed: nothing of the bake's access or its boot is in the image
    listing = _listing(baked_seeded)
    for rel in (AUTHORIZED_KEY, SSHD_DROPIN, NETWORK_UNIT, "root/.ansible", "tmp/.golden-ansible",
                "etc/ssh/ssh_host_"):
        assert f"/{rel}" not in listing, rel
    assert "/etc/systemd/system/multi-user.target.wants/kvstore.service" in listing
    out = tmp_path / "x"
    subprocess.run(["unsquashfs", "-q", "-d", str(out), str(baked_seeded.artifact("rootfs.squashfs")),
                    "var/lib/kvstore/data.json", "etc/machine-id", "etc/golden/agent.json"],
                   capture_output=True, check=True)
    assert json.loads((out / "var/lib/kvstore/data.json").read_text()) == {"greeting": SEED}
    # the boot's machine-id is gone: the parent's "uninitialized" is back (each node's first boot makes its own)
    assert (out / "etc/machine-id").read_text() == "uninitialized\n"
    agent = json.loads((out / "etc/golden/agent.json").read_text())
    assert {c["name"] for c in agent["checks"]} == {"agent-active", "kvstore-active", "kvstore-serves"}


def test_second_packer_bake_is_a_cache_hit(baked_seeded: Build) -> None:
    env = {**os.environ, "GOLDEN_HOME": str(bake_home())}
    started = time.monotonic()
    res = subprocess.run([*GOLDEN, "bake", "seeded", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    elapsed = time.monotonic() - started
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["cache_hit"] is True and out["build_id"] == baked_seeded.build_id
    print(f"cached packer rebake: {elapsed:.2f} s")
    assert elapsed < 30, f"cache hit took {elapsed:.1f} s"  # seconds, not a bake (~4 min); CI runs loaded


def _assert_nothing_stored(home: Path) -> None:
    store = Store(home / "store")
    assert store.builds("seeded") == []
    assert store.stale_staging("seeded") == []
    assert mounts_under(home) == []
    assert str(home) not in Path("/proc/mounts").read_text()
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    assert str(home) not in ps, [line for line in ps.splitlines() if str(home) in line]


def _run(project: Path, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GOLDEN, "--project", str(project), "bake", "seeded"],
                          env={**os.environ, "GOLDEN_HOME": str(home), **env}, capture_output=True, text=True,
                          timeout=1800)


def _only_run(home: Path) -> Path:
    runs = sorted((home / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


FAILING_FIRST = """\
- name: Fail on purpose
  ansible.builtin.fail:
    msg: broken on purpose
"""


def test_changed_role_rebuilds_and_its_failing_task_is_named(baked_seeded: Build, baked_base: Build,
                                                             tmp_path: Path) -> None:
    project, home = packer_project(tmp_path, baked_base, first_task=FAILING_FIRST)
    started = time.monotonic()
    res = _run(project, home)
    print(f"failing packer bake: {time.monotonic() - started:.1f} s")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "failed in the machine: role kvstore, task 'Fail on purpose': broken on purpose" in res.stderr, res.stderr
    _assert_nothing_stored(home)
    run = _only_run(home)
    inputs = json.loads((run / "inputs.json").read_text())
    assert inputs["build_id"] != baked_seeded.build_id  # the role changed: not the cached build
    assert inputs["parent"] == baked_base.build_id  # the parent was a cache hit
    assert (run / "status").read_text().strip() == "failed"
    assert "Fail on purpose" in (run / "stdout").read_text()


def test_no_ssh_within_the_timeout_shows_the_serial_console(baked_base: Build, tmp_path: Path) -> None:
    project, home = packer_project(tmp_path, baked_base)
    res = _run(project, home, GOLDEN_PACKER_SSH_TIMEOUT="30s")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "the machine did not reach SSH within 30 s" in res.stderr, res.stderr
    _assert_nothing_stored(home)
    console = (_only_run(home) / "serial.log").read_text(errors="replace")  # kept in the run record
    assert "Linux version" in console  # the kernel did boot, it just had no time to reach SSH
    last = [line for line in console.splitlines() if line.strip()][-1]
    assert last.strip() in res.stderr  # the error shows the end of the console


def test_ctrl_c_while_qemu_runs_leaves_nothing(baked_base: Build, tmp_path: Path) -> None:
    project, home = packer_project(tmp_path, baked_base)
    proc = subprocess.Popen([*GOLDEN, "--project", str(project), "bake", "seeded"],
                            env={**os.environ, "GOLDEN_HOME": str(home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            logs = list((home / "runs").glob("*/stdout")) if (home / "runs").is_dir() else []
            if logs and "Waiting for SSH" in logs[0].read_text(errors="replace"):
                break
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "packer never started QEMU"
            time.sleep(1)
        for _ in range(30):  # packer says it waits for SSH as it starts QEMU
            ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
            if any("qemu-system" in line and str(home) in line for line in ps.splitlines()):
                break
            time.sleep(0.5)
        else:
            pytest.fail("QEMU should run")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:  # a failed assertion: still let golden stop packer and its QEMU
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    _assert_nothing_stored(home)
    assert (_only_run(home) / "status").read_text().strip() == "interrupted"


def _fake_packer(tmp_path: Path, version: str) -> str:
    exe = tmp_path / "old-packer"
    exe.write_text(f'#!/bin/sh\necho "Packer v{version}"\n')
    exe.chmod(0o755)
    return str(exe)


@pytest.mark.parametrize(("case", "needle"), [
    ("missing", "packer not found"),
    ("too-old", "packer 1.5.0 at "),
    ("rejected", "packer rejected the template: invalid accelerator, only 'kvm', 'tcg'"),
])
def test_packer_missing_old_or_rejecting_fails_before_qemu(baked_base: Build, tmp_path: Path, case: str,
                                                           needle: str) -> None:
    project, home = packer_project(tmp_path, baked_base)
    env = {"missing": {"GOLDEN_PACKER": str(tmp_path / "no-packer")},
           "too-old": {"GOLDEN_PACKER": _fake_packer(tmp_path, "1.5.0")},
           "rejected": {"GOLDEN_PACKER_ACCELERATOR": "warp"}}[case]
    started = time.monotonic()
    res = _run(project, home, **env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert time.monotonic() - started < 60  # nothing was unpacked or booted
    _assert_nothing_stored(home)
