"""The on-node installer (roles/installer/files/golden-install) on a real block device: a sparse file
behind a loop device, laid out by real sfdisk, mkfs.vfat and mkfs.ext4, with squashfs images made by
mksquashfs. The plans come from the controller's own planning (plan_layout, the slot steps,
plan_install), so the two sides are tested together. Issue 26: v1 -> slot A, v2 -> slot B with the
data partition kept, and a corrupted write caught by the post-write hash (criterion 2)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.common import ROOT, load_script
from toolkit.core.run import run
from toolkit.install import entries
from toolkit.install.layout import Disk, Layout, plan_layout
from toolkit.install.plan import InstallPlan, plan_install
from toolkit.install.settings import MIB, DiskSettings
from toolkit.install.slots import Slot, SlotState, blessed, installed

INSTALLER = ROOT / "roles" / "installer" / "files" / "golden-install"
DISK_BYTES = 400 * MIB
OPTIONS = "console=ttyS0"  # entry_conf puts golden.slot= first

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


GI = load_script(INSTALLER, "golden_install")


@dataclass(frozen=True)
class Build:
    """A fake build: its squashfs, kernel and initrd, and the squashfs's sha256."""
    id: str
    squashfs: Path
    kernel: Path
    initrd: Path
    sha256: str


def _loop_unavailable() -> str:
    if os.geteuid() != 0:
        return "attaching a loop device needs root"
    r = run(["losetup", "-f"], check=False, capture=True)
    return "" if r.returncode == 0 else f"no free loop device here (losetup -f: {r.stderr.strip()})"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[str]:
    """A blank 400 MiB sparse disk behind a loop device, detached in any case."""
    if why := _loop_unavailable():  # the suite runs as root, like its netns and QEMU tests: a must, not a maybe
        pytest.fail(why)
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(DISK_BYTES)
    dev = run(["losetup", "--find", "--show", "--partscan", image], capture=True).stdout.strip()
    try:
        yield dev
    finally:
        run(["losetup", "--detach", dev], check=False, capture=True)


def _build(tmp_path: Path, build_id: str) -> Build:
    tree = tmp_path / f"tree-{build_id}"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "golden-build").write_text(f"{build_id}\n")
    (tree / "noise").write_bytes(os.urandom(5 * MIB))  # incompressible: the image spans several write chunks
    squashfs = tmp_path / f"{build_id}.squashfs"
    run(["mksquashfs", tree, squashfs, "-noappend", "-quiet", "-no-progress"], capture=True)
    kernel, initrd = tmp_path / f"{build_id}.vmlinuz", tmp_path / f"{build_id}.initrd"
    kernel.write_bytes(f"kernel of {build_id}".encode() * 100)
    initrd.write_bytes(f"initrd of {build_id}".encode() * 300)
    return Build(build_id, squashfs, kernel, initrd, hashlib.sha256(squashfs.read_bytes()).hexdigest())


@pytest.fixture
def builds(tmp_path: Path) -> tuple[Build, Build]:
    """Two small builds whose squashfs images differ."""
    return _build(tmp_path, "base-v1"), _build(tmp_path, "base-v2")


def _layout(dev: str) -> Layout:
    settings = DiskSettings(device=dev, esp_bytes=64 * MIB, slot_bytes=16 * MIB)
    return plan_layout([Disk(dev.removeprefix("/dev/"), DISK_BYTES)], settings)


def _plan(dev: str, slot: Slot, build: Build, generation: int) -> InstallPlan:
    return plan_install(_layout(dev), slot, build.id, build.sha256, 3, generation, OPTIONS)


def _argv(tmp_path: Path, plan: InstallPlan, build: Build) -> list[str]:
    path = tmp_path / f"plan-{build.id}.json"
    path.write_text(plan.to_json())
    return ["--plan", str(path), "--squashfs", str(build.squashfs), "--kernel", str(build.kernel),
            "--initrd", str(build.initrd)]


def _install(tmp_path: Path, plan: InstallPlan, build: Build) -> dict:
    r = run([sys.executable, INSTALLER, *_argv(tmp_path, plan, build)], check=False, capture=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def _table(dev: str) -> dict:
    return json.loads(run(["sfdisk", "--json", dev], capture=True).stdout)["partitiontable"]


@contextlib.contextmanager
def _mounted(dev: str, layout: Layout, label: str, mode: str = "rw") -> Iterator[Path]:
    part = next(p for p in layout.partitions if p.label == label)
    mnt = Path(run(["mktemp", "-d"], capture=True).stdout.strip())
    run(["mount", "-o", f"{mode},offset={part.start},sizelimit={part.size}", dev, mnt], capture=True)
    try:
        yield mnt
    finally:
        run(["umount", mnt], capture=True)
        mnt.rmdir()


def _esp_files(dev: str, layout: Layout, tmp_path: Path) -> dict[str, bytes]:
    """Every file on the ESP, read with mtools (this kernel may lack vfat: the installer does not mount it)."""
    out = Path(run(["mktemp", "-d", "-p", tmp_path], capture=True).stdout.strip())
    run(["mcopy", "-s", "-n", "-i", f"{dev}@@{layout.partitions[0].start}", "::/", out], capture=True,
        env={"MTOOLS_SKIP_CHECK": "1"})
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _slot_sha256(dev: str, layout: Layout, slot: Slot, size: int) -> str:
    with open(dev, "rb") as f:
        f.seek(layout.slot(slot).start)
        return hashlib.sha256(f.read(size)).hexdigest()


def _entry_text(slot: Slot, build: Build, generation: int) -> bytes:
    entry = entries.new_entry(slot, build.id, 3)
    return entries.entry_conf(entry, generation, OPTIONS).encode()


def test_v1_to_slot_a_then_v2_to_slot_b_keeps_the_data_partition(disk: str, builds: tuple[Build, Build],
                                                                 tmp_path: Path) -> None:
    v1, v2 = builds
    layout = _layout(disk)
    state = SlotState()
    first = _install(tmp_path, _plan(disk, state.inactive, v1, 1), v1)
    assert first["slot"] == "a" and first["build"] == v1.id and first["sha256"] == v1.sha256
    assert first["verified"] is True and first["laid_out"] is True and first["duration_s"] > 0

    table = _table(disk)
    assert table["label"] == "gpt"
    got = [(p["name"], p["type"].lower(), p["start"] * 512, p["size"] * 512) for p in table["partitions"]]
    assert got == [(p.label, p.type_guid, p.start, p.size) for p in layout.partitions]
    assert [p[0] for p in got] == ["esp", "golden-a", "golden-b", "golden-data"]
    with _mounted(disk, layout, "golden-data") as data:
        (data / "kept.txt").write_text("written before v2\n")

    state = blessed(installed(state, v1.id))
    assert state.inactive == Slot.B
    second = _install(tmp_path, _plan(disk, state.inactive, v2, 2), v2)
    assert (second["slot"], second["build"], second["verified"], second["laid_out"]) == ("b", v2.id, True, False)

    assert _table(disk) == table  # same disk id, partition uuids, starts and sizes: not re-partitioned
    with _mounted(disk, layout, "golden-data") as data:
        assert (data / "kept.txt").read_text() == "written before v2\n"
    assert _slot_sha256(disk, layout, Slot.A, v1.squashfs.stat().st_size) == v1.sha256
    assert _slot_sha256(disk, layout, Slot.B, v2.squashfs.stat().st_size) == v2.sha256
    with _mounted(disk, layout, "golden-b", "ro") as root:  # the slot is a file system as it stands
        assert (root / "etc" / "golden-build").read_text() == f"{v2.id}\n"
    assert _esp_files(disk, layout, tmp_path) == {
        "golden/a/initrd": v1.initrd.read_bytes(), "golden/a/vmlinuz": v1.kernel.read_bytes(),
        "golden/b/initrd": v2.initrd.read_bytes(), "golden/b/vmlinuz": v2.kernel.read_bytes(),
        "loader/loader.conf": entries.loader_conf().encode(),
        f"loader/entries/golden-a-{v1.id}+3.conf": _entry_text(Slot.A, v1, 1),
        f"loader/entries/golden-b-{v2.id}+3.conf": _entry_text(Slot.B, v2, 2),
    }
    assert b"default" not in entries.loader_conf().encode()  # a pinned default defeats the fall-back


def test_a_corrupted_write_is_refused_and_the_running_slot_keeps_booting(
        disk: str, builds: tuple[Build, Build], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v1, v2 = builds
    layout = _layout(disk)
    _install(tmp_path, _plan(disk, Slot.A, v1, 1), v1)
    before = _esp_files(disk, layout, tmp_path)

    def flip(device: str, start: int, size: int) -> None:  # the test hook: damage the slot after the write
        with open(device, "r+b", buffering=0) as f:
            f.seek(start + size // 2)
            byte = f.read(1)
            f.seek(start + size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))

    capsys.readouterr()
    rc = GI.main(_argv(tmp_path, _plan(disk, Slot.B, v2, 2), v2), after_write=flip)
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert err.startswith("golden-install: slot b reads back sha256 ") and f"not {v2.sha256}" in err
    assert len(err.strip().splitlines()) == 1
    assert _esp_files(disk, layout, tmp_path) == before  # v1's entry, kernel, loader.conf as they were; no b entry
    assert _slot_sha256(disk, layout, Slot.A, v1.squashfs.stat().st_size) == v1.sha256


def test_a_squashfs_that_is_not_the_build_touches_nothing(disk: str, builds: tuple[Build, Build],
                                                          tmp_path: Path) -> None:
    v1, v2 = builds
    plan = _plan(disk, Slot.A, v1, 1)
    wrong = Build(v1.id, v2.squashfs, v1.kernel, v1.initrd, v1.sha256)
    r = run([sys.executable, INSTALLER, *_argv(tmp_path, plan, wrong)], check=False, capture=True)
    assert r.returncode == 1 and r.stdout == ""
    assert f"names {v1.sha256}" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert run(["sfdisk", "--json", disk], check=False, capture=True).returncode == 1  # still blank


@pytest.mark.parametrize(("what", "prepare", "says"), [
    ("a GPT of another system", ["sfdisk", "--quiet"], "holds a partition table that is not golden's"),
    ("a file system on the whole disk", ["mkfs.ext4", "-q"], "holds data but no partition table"),
])
def test_a_disk_that_is_not_goldens_is_refused_untouched(disk: str, builds: tuple[Build, Build], tmp_path: Path,
                                                         what: str, prepare: list[str], says: str) -> None:
    run([*prepare, disk], input='label: gpt\nsize=100MiB, name="linux"\n' if prepare[0] == "sfdisk" else None,
        capture=True)
    with open(disk, "rb") as f:
        before = hashlib.sha256(f.read(2 * MIB)).hexdigest()
    r = run([sys.executable, INSTALLER, *_argv(tmp_path, _plan(disk, Slot.A, builds[0], 1), builds[0])],
            check=False, capture=True)
    assert r.returncode == 1, what
    assert says in r.stderr and "golden retire" in r.stderr
    with open(disk, "rb") as f:
        assert hashlib.sha256(f.read(2 * MIB)).hexdigest() == before


def test_a_third_install_replaces_the_older_slot_and_keeps_the_blessed_one(disk: str, tmp_path: Path) -> None:
    v1, v2, v3 = (_build(tmp_path, f"base-v{n}") for n in (1, 2, 3))
    layout = _layout(disk)
    esp = f"{disk}@@{layout.partitions[0].start}"
    state = SlotState()
    for generation, build in enumerate((v1, v2), 1):
        _install(tmp_path, _plan(disk, state.inactive, build, generation), build)
        state = blessed(installed(state, build.id))
        name = f"golden-{state.active}-{build.id}"  # what systemd-bless-boot leaves: the counter dropped
        run(["mren", "-i", esp, f"::/loader/entries/{name}+3.conf", f"::/loader/entries/{name}.conf"], capture=True,
            env={"MTOOLS_SKIP_CHECK": "1"})
    assert state.inactive == Slot.A

    third = _install(tmp_path, _plan(disk, state.inactive, v3, 3), v3)
    assert (third["slot"], third["build"], third["laid_out"]) == ("a", v3.id, False)
    files = _esp_files(disk, layout, tmp_path)
    assert sorted(n for n in files if n.startswith("loader/entries/")) == [
        f"loader/entries/golden-a-{v3.id}+3.conf", f"loader/entries/golden-b-{v2.id}.conf"]
    assert files["golden/a/vmlinuz"] == v3.kernel.read_bytes() and files["golden/b/vmlinuz"] == v2.kernel.read_bytes()
    assert _slot_sha256(disk, layout, Slot.A, v3.squashfs.stat().st_size) == v3.sha256
    assert _slot_sha256(disk, layout, Slot.B, v2.squashfs.stat().st_size) == v2.sha256
