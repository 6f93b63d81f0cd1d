"""Real bakes with diskimage-builder.

The full bake of images/base.yaml comes from the cached ``baked_base`` fixture; the failure and
interruption tests use a throwaway project whose element fails (or hangs) early in the bake, once
the chroot has its mounts, so they take about a minute each instead of a full bake.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.bake import bake_home
from tests.fixtures.common import ROOT
from toolkit.core.mounts import mounts_under
from toolkit.image.spec import load_image
from toolkit.store.artifacts import Store

pytestmark = pytest.mark.integration

GOLDEN = [sys.executable, "-c", "import sys; from toolkit.cli import main; sys.exit(main())"]
SENTINEL = "s3ntinel-bmc-pa55word"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_base_bake_manifest(baked_base, tmp_path):
    m = baked_base.manifest
    # every package with the archive apt installed it from (multi-arch names included)
    assert set(m.package_archives) == set(m.packages)
    assert set(m.package_archives.values()) <= {"bookworm", "bookworm-updates", "bookworm-security", "local"}
    # either is right: the release's version, or the security suite's once it has shipped a fix
    assert m.package_archives["openssh-server"] in ("bookworm", "bookworm-security")
    assert m.image == "base" and m.build_id == baked_base.build_id == baked_base.path.name
    assert set(m.artifacts) == {"vmlinuz", "initrd", "rootfs.squashfs"}
    for name, art in m.artifacts.items():
        path = baked_base.artifact(name)
        assert path.stat().st_size == art.size > 0
        assert _sha256(path) == art.sha256
    assert path.with_name("rootfs.squashfs").read_bytes()[:4] == b"hsqs"
    assert len(m.packages) > 100
    for pkg in ("linux-image-amd64", "initramfs-tools", "python3", "openssh-server", "iproute2"):
        assert pkg in m.packages, pkg
    assert not any(p.startswith("ansible") for p in m.packages), "ansible must not be installed in the image"
    spec = load_image("base", ROOT / "images", ROOT / "roles")
    assert set(m.roles) == {r.name for r in spec.roles}  # role name -> hash of its files
    assert [r["name"] for r in m.spec["roles"]] == [r.name for r in spec.roles]  # the order they ran in
    assert all(len(h) == 64 for h in m.roles.values())
    assert m.spec == spec.model_dump(mode="json")
    bake_checks = [c.name for c in spec.checks if c.stage == "bake"]
    assert sorted(m.checks) == sorted(bake_checks)
    assert all(r.passed for r in m.checks.values()), m.checks
    assert all(k.startswith("DIB_") for k in m.dib_env)
    assert m.tool_versions["diskimage-builder"] == m.inputs["dib_version"]
    assert m.bake_seconds > 0
    assert (baked_base.logs / "dib.log").stat().st_size > 0
    # nothing of the build host or of Ansible is baked in
    listing = subprocess.run(["unsquashfs", "-l", str(baked_base.artifact("rootfs.squashfs"))],
                             capture_output=True, text=True, check=True).stdout
    assert "/.ansible" not in listing and "/tmp/.golden-ansible" not in listing
    # every node of an image must not share one SSH host identity: keys are made at boot
    assert "/etc/ssh/ssh_host_" not in listing
    assert "/etc/systemd/system/multi-user.target.wants/ssh-keygen.service" in listing
    out = tmp_path / "extract"
    subprocess.run(["unsquashfs", "-q", "-d", str(out), str(baked_base.artifact("rootfs.squashfs")),
                    "etc/resolv.conf"], capture_output=True, check=True)
    assert "nameserver" not in (out / "etc" / "resolv.conf").read_text()  # resolvers come from DHCP
    text = (baked_base.path / "manifest.json").read_text() + (baked_base.logs / "dib.log").read_text(errors="replace")
    for needle in ("PASSWORD=", "password:", "BEGIN OPENSSH PRIVATE KEY", "$ANSIBLE_VAULT", SENTINEL):
        assert needle not in text, needle


def test_second_bake_is_a_cache_hit(baked_base):
    env = {**os.environ, "GOLDEN_HOME": str(bake_home())}
    started = time.monotonic()
    res = subprocess.run([*GOLDEN, "bake", "base", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    elapsed = time.monotonic() - started
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["cache_hit"] is True
    assert out["build_id"] == baked_base.build_id
    assert out["artifacts"]["rootfs.squashfs"]["sha256"] == baked_base.manifest.artifacts["rootfs.squashfs"].sha256
    assert elapsed < 5, f"cache hit took {elapsed:.1f} s"
    assert res.stderr == ""  # --json is quiet
    # stderr into a file (as under cron or CI): one line per step, with the elapsed time
    log = Path(env["GOLDEN_HOME"]) / "cache-hit.stderr"
    with open(log, "w") as errf:
        subprocess.run([*GOLDEN, "bake", "base"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=errf,
                       check=True, timeout=60)
    lines = log.read_text().splitlines()
    assert lines[0] == "bake base: planning (hashing the inputs) (+0s)", lines
    assert lines[1] == f"bake base: cache hit: {baked_base.build_id} is already stored (+0s)", lines
    assert re.fullmatch(r"bake base: done after \d+s", lines[-1]), lines


FAIL_SPEC = """\
name: {name}
elements: [{element}]
roles: []
"""


def _project(tmp_path: Path, name: str, element: str, script: str) -> Path:
    proj = tmp_path / "project"
    (proj / "images").mkdir(parents=True)
    (proj / "roles").mkdir()
    hook = proj / "elements" / element / "pre-install.d" / "10-golden-test"
    hook.parent.mkdir(parents=True)
    hook.write_text("#!/bin/bash\n" + script)
    hook.chmod(0o755)
    (proj / "images" / f"{name}.yaml").write_text(FAIL_SPEC.format(name=name, element=element))
    return proj


def _env(tmp_path: Path) -> dict[str, str]:
    # A secret in the caller's environment must not reach DIB, the log or the run record.
    return {**os.environ, "GOLDEN_HOME": str(tmp_path / "home"), "IPMI_PASSWORD": SENTINEL,
            "DIB_BMC_PASSWORD": SENTINEL}


def _assert_nothing_left(home: Path, image: str) -> Path:
    store = Store(home / "store")
    assert store.builds(image) == []
    assert store.stale_staging(image) == []
    assert mounts_under(home) == []
    assert str(home) not in Path("/proc/mounts").read_text()
    runs = sorted((home / "runs").iterdir())
    assert len(runs) == 1
    for f in runs[0].iterdir():
        assert SENTINEL not in f.read_text(errors="replace"), f
    return runs[0]


def test_failing_element_leaves_no_entry_and_no_mounts(tmp_path):
    proj = _project(tmp_path, "failing", "golden-test-fail",
                    'echo "about to fail on purpose"\ntest -d /proc/self && exit 1\n')
    res = subprocess.run([*GOLDEN, "--project", str(proj), "bake", "failing"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "failed in DIB step pre-install.d/10-golden-test" in res.stderr, res.stderr
    assert "about to fail on purpose" in res.stderr  # the tail of the log
    assert "full log:" in res.stderr
    run = _assert_nothing_left(tmp_path / "home", "failing")
    assert (run / "status").read_text().strip() == "failed"
    assert (run / "rc").read_text().strip() == "1"
    assert "disk-image-create" in (run / "command").read_text()
    assert "about to fail on purpose" in (run / "stdout").read_text()
    assert json.loads((run / "inputs.json").read_text())["image"] == "failing"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_bake_leaves_nothing(tmp_path, sig):
    proj = _project(tmp_path, "hanging", "golden-test-hang", 'echo "golden-test: hanging now"\nsleep 600\n')
    home = tmp_path / "home"
    proc = subprocess.Popen([*GOLDEN, "--project", str(proj), "bake", "hanging"], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 900
        while True:
            logs = list((home / "runs").glob("*/stdout")) if (home / "runs").is_dir() else []
            if logs and "golden-test: hanging now" in logs[0].read_text(errors="replace"):
                break
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the bake never reached the hanging step"
            time.sleep(1)
        assert mounts_under(home), "the chroot should have mounts while the step runs"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    run = _assert_nothing_left(home, "hanging")
    assert (run / "status").read_text().strip() == "interrupted"
    # nothing of the bake keeps running
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "golden-test-hang" not in ps and str(home) not in ps


def test_out_of_disk_leaves_no_entry_and_no_mounts(tmp_path):
    """The state home on a 300 MiB tmpfs: the bake fills it while unpacking the base system."""
    proj = _project(tmp_path, "nospace", "golden-test-noop", "exit 0\n")
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300m", "golden-test-full", str(home)], check=True)
    try:
        res = subprocess.run([*GOLDEN, "--project", str(proj), "bake", "nospace"], env=_env(tmp_path),
                             capture_output=True, text=True, timeout=1200)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        assert "bake of nospace failed in DIB step " in res.stderr, res.stderr
        assert "No space left on device" in res.stderr  # the tail of the log shows why
        store = Store(home / "store")
        assert store.builds("nospace") == [] and store.stale_staging("nospace") == []
        assert mounts_under(home / "store") == []
        (run,) = (home / "runs").iterdir()
        assert (run / "status").read_text().strip() == "failed"
    finally:
        subprocess.run(["umount", str(home)], check=False)


def test_two_images_bake_concurrently_without_interfering(tmp_path):
    """Two bakes of different images at once, each stopped on purpose once its chroot is set up:
    both get through debootstrap and apt (shared caches, separate work folders) to their own step."""
    procs = {}
    for name in ("left", "right"):
        proj = _project(tmp_path / name, name, f"golden-test-{name}",
                        f'echo "golden-test: {name} reached its step"\nexit 1\n')
        env = {**_env(tmp_path / name), "GOLDEN_HOME": str(tmp_path / "shared-home")}
        procs[name] = subprocess.Popen([*GOLDEN, "--project", str(proj), "bake", name], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, proc in procs.items():
        _out, err = proc.communicate(timeout=1500)
        assert proc.returncode == 1, err
        assert f"bake of {name} failed in DIB step pre-install.d/10-golden-test" in err, err
        # stderr is a pipe, not a terminal: the real DIB run shows as one line per step with elapsed times
        steps = re.findall(rf"^bake {name}: (\S+) \(\+(\d+)(?:m\d\d)?s\)$", err, re.M)
        assert "root.d/08-debootstrap" in {s for s, _ in steps} and len(steps) >= 3, err
        assert re.search(rf"^bake {name}: failed after \d+(m\d\d)?s$", err, re.M), err
        assert f"golden-test: {name} reached its step" in err
        other = "right" if name == "left" else "left"
        assert f"golden-test: {other}" not in err
    store = Store(tmp_path / "shared-home" / "store")
    assert store.images() == [] and mounts_under(tmp_path / "shared-home") == []


def test_force_never_changes_a_stored_build(baked_base):
    """--force on a build a channel points at bakes the same inputs under a new id; the old bytes stay."""
    env = {**os.environ, "GOLDEN_HOME": str(bake_home())}
    subprocess.run([*GOLDEN, "publish", "base", baked_base.build_id, "--channel", "immutable-test"], cwd=ROOT,
                   env=env, check=True, capture_output=True, timeout=60)
    before = {n: _file_sha256(baked_base.artifact(n)) for n in baked_base.manifest.artifacts}
    manifest_before = (baked_base.path / "manifest.json").read_bytes()
    res = subprocess.run([*GOLDEN, "--json", "bake", "base", "--force"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    store = Store(bake_home() / "store")
    try:
        assert out["build_id"] != baked_base.build_id and out["cache_hit"] is False
        assert {n: _file_sha256(baked_base.artifact(n)) for n in before} == before
        assert (baked_base.path / "manifest.json").read_bytes() == manifest_before
        forced = store.get("base", out["build_id"])
        assert forced.manifest.inputs["rebuild"] and forced.manifest.packages == baked_base.manifest.packages
    finally:
        if store.find("base", out["build_id"]) is not None:
            store.delete("base", out["build_id"])  # keep the shared bake cache from growing every run


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
