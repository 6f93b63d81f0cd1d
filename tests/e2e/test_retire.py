"""Retire a QEMU lab machine for real: its virtio and emulated NVMe disks, filled with canary strings
from the host before it boots, are erased by the cleaning image (images/cleaner.yaml) and verified;
a scan of both disk files from the host finds no canary, and the per-disk report names the method.

Then the same machine with a third disk attached read-only: the retire ends clean-failed with exit
1, the read-only disk still holds its canary (nothing claimed otherwise), and ``golden reimage``
refuses the host until ``golden retire --clear`` (audited). One lab machine, two TCG boots.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.bake import bake_home, bake_image
from tests.fixtures.boot import ServeProcess, start_golden_serve
from tests.fixtures.common import free_port
from tests.fixtures.lab import GoldenRunner
from toolkit.lab.hardware import load_hardware, set_machine_hardware
from toolkit.state.db import SQLiteStateDB
from toolkit.store.artifacts import Build

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

CANARY = b"GOLDEN-ERASE-CANARY-5d1c9e"
NODE = "lab-n01"


def _canary_offsets(size: int) -> list[int]:
    """Where the canaries go: both ends, the middle, and odd places no MiB-aligned sample starts at."""
    return [0, 4096 + 17, size // 3 + 12345, size // 2, size - 3 * 1024 * 1024 - 99, size - len(CANARY)]


def fill_with_canaries(disk: Path, size_gib: int, scratch: Path) -> None:
    """A qcow2 disk of ``size_gib`` whose raw content carries CANARY at every canary offset."""
    raw = scratch / f"{disk.name}.raw"
    size = size_gib << 30
    with raw.open("wb") as f:
        f.truncate(size)
        for off in _canary_offsets(size):
            f.seek(off)
            f.write(CANARY)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)], check=True)
    raw.unlink()


def wait_released(disk: Path, timeout: float = 600) -> None:
    """Until QEMU let go of the disk (the clean machine powered itself off, its caches flushed)."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["qemu-img", "info", str(disk)], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, f"{disk} still in use {timeout:g} s after the retire"
        time.sleep(2)


def _data_ranges(fd: int) -> Iterator[tuple[int, int]]:
    """The file's data extents (SEEK_DATA/SEEK_HOLE): qemu-img writes zeros as holes, so only data is read."""
    pos, end = 0, os.fstat(fd).st_size
    while pos < end:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data after pos
                return
            raise
        pos = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, pos


def canaries_in(disk: Path, scratch: Path) -> int:
    """How many canaries the disk's guest-visible content holds, read back from the host (qemu-img to raw)."""
    raw = scratch / f"{disk.name}.scan.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk), str(raw)], check=True)
    found = 0
    with raw.open("rb") as f:
        for start, stop in _data_ranges(f.fileno()):
            f.seek(start)
            tail = b""
            while start < stop and (chunk := f.read(min(64 << 20, stop - start))):
                start += len(chunk)
                found += (tail + chunk).count(CANARY)
                tail = chunk[-(len(CANARY) - 1):]  # a canary across two chunks is counted once, in the second
    raw.unlink()
    return found


@pytest.fixture(scope="module")
def cleaner() -> Build:
    return bake_image("cleaner")


@pytest.fixture
def machine(tmp_path: Path, cleaner: Build) -> Iterator[tuple[GoldenRunner, ServeProcess, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "store").symlink_to(bake_home() / "store")  # the baked cleaner; this test never deletes builds
    golden = GoldenRunner(home=home)
    port = free_port()
    golden.json("lab", "up", "--nodes", "1", "--boot-url", f"http://10.0.2.2:{port}", "--memory", "1536",
                "--disks", "1")
    inventory = home / "lab" / "inventory.yaml"
    serve = start_golden_serve(home, inventory, tmp_path / "serve.log", listen=f"127.0.0.1:{port}")
    try:
        yield golden, serve, inventory
    finally:
        serve.stop()
        golden.run("lab", "down", check=False)


def _state(golden: GoldenRunner, inventory: Path) -> dict:
    [host] = golden.json("fleet", NODE, "-i", str(inventory))
    return host


def _audit(home: Path) -> list[tuple[str, str, dict]]:
    """The audit history, oldest first."""
    db = SQLiteStateDB(home / "state.db")
    try:
        with db.read() as repo:
            return [(a.action, a.subject, json.loads(a.detail or "{}")) for a in reversed(repo.list_audit())]
    finally:
        db.close()


def test_retire_erases_and_verifies_every_disk_or_ends_clean_failed(machine, cleaner: Build, tmp_path: Path) -> None:
    golden, _serve, inventory = machine
    folder = golden.home / "lab" / "nodes" / NODE
    set_machine_hardware(folder, add_disk="nvme")
    hw = load_hardware(folder)
    assert hw is not None and [(d.kind, d.size_gib) for d in hw.disks] == [("virtio", 8), ("nvme", 1)]
    disks = [folder / d.file for d in hw.disks]
    for d, spec in zip(disks, hw.disks, strict=True):
        fill_with_canaries(d, spec.size_gib, tmp_path)
        assert canaries_in(d, tmp_path) == 6  # the scan sees what was written: it could fail
    inv = ["-i", str(inventory)]
    image = f"cleaner@{cleaner.build_id}"

    # 1. Retire: both disks erased and verified; the host is clean; the report names each disk's method.
    out = golden.run("--json", "retire", NODE, "--reason", "e2e: decommission", "--image", image,
                     "--boot-timeout", "1500", "--yes", *inv, timeout=1800, check=False)
    result = json.loads(out.stdout)
    assert out.returncode == 0 and result["results"] == {NODE: "done"}, (result, out.stderr)
    for d in disks:
        wait_released(d)
    assert [canaries_in(d, tmp_path) for d in disks] == [0, 0]
    host = _state(golden, inventory)
    assert host["state"] == "clean" and host["observed"] is None, host
    report = host["clean_report"]
    # QEMU's NVMe has no sanitize but formats with erase; its virtio disk zeroes (write-zeroes), verified
    assert report == "nvme0n1 (nvme): erased by nvme-format-erase; vda (virtio): erased by zeroout", report
    audit = [(a, d) for a, s, d in _audit(golden.home) if s == NODE]
    assert [a for a, _ in audit] == ["retire", "clean"], audit
    per_disk = {d["name"]: d for d in audit[1][1]["disks"]}
    assert sorted(per_disk) == ["nvme0n1", "vda"]
    assert (per_disk["vda"]["method"], per_disk["nvme0n1"]["method"]) == ("zeroout", "nvme-format-erase")
    for d in per_disk.values():  # the method named is the one attempt that exited 0 and verified
        assert [a["method"] for a in d["attempts"] if a["verified"]] == [d["method"]], d
        assert all(a["rc"] == 0 for a in d["attempts"] if a["verified"])

    # 2. The same machine with a third disk attached read-only: clean-failed, exit 1, no build until cleared.
    set_machine_hardware(folder, add_disk="virtio", readonly=True)
    hw = load_hardware(folder)
    assert hw is not None and hw.disks[2].readonly
    locked = folder / hw.disks[2].file
    fill_with_canaries(locked, hw.disks[2].size_gib, tmp_path)
    out = golden.run("--json", "retire", NODE, "--reason", "e2e: read-only disk", "--image", image,
                     "--boot-timeout", "1500", "--yes", *inv, timeout=1800, check=False)
    result = json.loads(out.stdout)
    assert out.returncode == 1 and result["results"] == {NODE: "failed"}, (result, out.stderr)
    host = _state(golden, inventory)
    assert host["state"] == "clean-failed", host
    assert "vdb (virtio): FAILED: the disk is read-only" in host["clean_report"], host
    assert canaries_in(locked, tmp_path) == 6  # nothing was erased there, and nothing said it was

    refused = golden.run("reimage", NODE, "--image", image, "--yes", *inv, check=False)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.splitlines()[0] == (
        f"golden: error: refused by the retire gate: {NODE} (clean-failed) must not be given a build "
        "(a retire is under way or its clean failed)"), refused.stderr
    assert "Traceback" not in refused.stderr

    golden.run("retire", "--clear", NODE, "--reason", "e2e: disk replaced", *inv)
    assert _state(golden, inventory)["state"] != "clean-failed"
    planned = golden.json("reimage", NODE, "--image", image, "--dry-run", *inv)
    assert [w["hosts"] for w in planned["plan"]["waves"]] == [[NODE]]
    actions = [a for a, s, _ in _audit(golden.home) if s == NODE]
    assert actions == ["retire", "clean", "retire", "clean-failed", "retire-clear"], actions
