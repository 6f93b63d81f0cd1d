"""The cleaner's erase method choice per disk (roles/cleaner/files/golden-cleaner), as tables: the plan
from a disk's facts (NVMe, ATA, virtio, SCSI; capabilities; read-only), the facts' parsers, and the
acting loop on a real file: a method that exits 0 but leaves data behind is not trusted."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.fixtures.common import load_script

CLEANER = Path(__file__).resolve().parents[2] / "roles" / "cleaner" / "files" / "golden-cleaner"
MIB = 1024 * 1024
C = load_script(CLEANER, "golden_cleaner")
G = 1 << 30

PLANS = [  # (what, facts, methods in order, refusal word)
    ("NVMe with sanitize and format", C.DiskFacts("nvme0n1", "nvme", G, nvme_format=True, nvme_sanitize_block=True,
                                                  discard=True, write_zeroes=True),
     ("nvme-sanitize-block", "nvme-format-erase", "blkdiscard", "zeroout", "overwrite"), ""),
    ("NVMe with format only (QEMU's)", C.DiskFacts("nvme0n1", "nvme", G, nvme_format=True, write_zeroes=True),
     ("nvme-format-erase", "zeroout", "overwrite"), ""),
    ("NVMe without format or sanitize", C.DiskFacts("nvme1n1", "nvme", G, discard=True),
     ("blkdiscard", "overwrite"), ""),
    ("ATA with security, not frozen", C.DiskFacts("sda", "ata", G, ata_security=True, discard=True),
     ("ata-secure-erase", "blkdiscard", "overwrite"), ""),
    ("ATA frozen by the firmware", C.DiskFacts("sda", "ata", G, ata_security=True, ata_frozen=True),
     ("overwrite",), ""),
    ("ATA without security", C.DiskFacts("sdb", "ata", G, write_zeroes=True), ("zeroout", "overwrite"), ""),
    ("SCSI never gets ATA commands", C.DiskFacts("sdc", "scsi", G, ata_security=True), ("overwrite",), ""),
    ("NVMe flags on a virtio disk are ignored", C.DiskFacts("vda", "virtio", G, nvme_format=True, write_zeroes=True),
     ("zeroout", "overwrite"), ""),
    ("virtio with discard and write-zeroes", C.DiskFacts("vda", "virtio", G, discard=True, write_zeroes=True),
     ("blkdiscard", "zeroout", "overwrite"), ""),
    ("virtio with nothing", C.DiskFacts("vdb", "virtio", G), ("overwrite",), ""),
    ("read-only virtio", C.DiskFacts("vdb", "virtio", G, read_only=True, write_zeroes=True), (), "read-only"),
    ("read-only NVMe", C.DiskFacts("nvme0n1", "nvme", G, read_only=True, nvme_format=True), (), "read-only"),
    ("a disk of no size", C.DiskFacts("vdc", "virtio", 0), (), "no size"),
]


@pytest.mark.parametrize("what, facts, methods, refusal", PLANS, ids=[p[0] for p in PLANS])
def test_erase_methods_per_disk(what: str, facts: object, methods: tuple[str, ...], refusal: str) -> None:
    plan = C.plan_disk(facts)
    assert plan.methods == methods, what
    assert (refusal in plan.refusal) if refusal else plan.refusal == ""
    assert set(plan.methods) <= set(C.METHODS)
    assert not plan.methods or plan.methods[-1] == "overwrite"  # the last resort is always there


KINDS = [("nvme0n1", "", "nvme"), ("nvme12n3", "nvme", "nvme"), ("vda", "", "virtio"), ("vdab", "", "virtio"),
         ("sda", "sata", "ata"), ("sda", "usb", "scsi"), ("sdb", "", "scsi"), ("mmcblk0", "", "other"),
         ("nvme0", "", "other")]  # the controller's char device is no disk


@pytest.mark.parametrize("name, tran, kind", KINDS)
def test_disk_kind(name: str, tran: str, kind: str) -> None:
    assert C.kind_of(name, tran) == kind


@pytest.mark.parametrize("ctrl, caps", [
    ({"oacs": 0x17, "sanicap": 0}, (True, False)),  # QEMU's emulated controller: format, no sanitize
    ({"oacs": 0x5e, "sanicap": 0x60000003}, (True, True)),
    ({"oacs": 0x0, "sanicap": 0x1}, (False, False)),  # crypto-only sanitize is not planned
    ({}, (False, False)),
])
def test_nvme_capabilities(ctrl: dict[str, int], caps: tuple[bool, bool]) -> None:
    assert C.nvme_caps(ctrl) == caps


HDPARM_OK = "Commands/features:\n\tEnabled\tSupported:\n\nSecurity: \n\tMaster password revision code = 65534\n" \
            "\t\tsupported\n\tnot\tenabled\n\tnot\tlocked\n\tnot\tfrozen\n\tnot\texpired: security count\n" \
            "\t\tsupported: enhanced erase\n\t2min for SECURITY ERASE UNIT.\n\nLogical Unit WWN Device Identifier"
HDPARM_FROZEN = HDPARM_OK.replace("\tnot\tfrozen", "\t\tfrozen")


@pytest.mark.parametrize("text, caps", [(HDPARM_OK, (True, False)), (HDPARM_FROZEN, (True, True)),
                                        ("Security: \n\tnot\tsupported\n", (False, False)), ("", (False, False))])
def test_ata_security(text: str, caps: tuple[bool, bool]) -> None:
    assert C.ata_security(text) == caps


def test_samples_cover_both_ends_and_stay_inside() -> None:
    size = 8 * G + 512  # not a whole number of MiB
    offsets = C.sample_offsets(size, 8, random.Random(1))
    assert offsets[0] == 0 and offsets[-1] == (size - MIB) // MIB * MIB
    assert all(o % MIB == 0 and o + MIB <= size for o in offsets) and len(offsets) >= 3


def test_a_method_that_does_nothing_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = tmp_path / "disk"
    dev.write_bytes(b"CANARY" * (4 * MIB // 6))
    ran: list[str] = []
    real = C.run_method

    def fake(method: str, path: str, size: int) -> tuple[int, str]:
        ran.append(method)
        if method == "overwrite":
            return real(method, path, size)  # the real overwrite
        return 0, "exit 0 and did nothing"  # as a device that ignores discards

    monkeypatch.setattr(C, "run_method", fake)
    facts = C.DiskFacts(str(dev), "virtio", dev.stat().st_size, discard=True, write_zeroes=True)
    monkeypatch.setattr(C, "plan_disk", lambda f: C.DiskPlan(f.name, ("blkdiscard", "zeroout", "overwrite")))
    result = _erase_file(monkeypatch, facts)
    assert ran == ["blkdiscard", "zeroout", "overwrite"]
    assert (result.result, result.method) == ("erased", "overwrite")
    assert [a["verified"] for a in result.attempts] == [False, False, True]
    assert b"CANARY" not in dev.read_bytes()


def test_a_failing_exit_status_is_never_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = tmp_path / "disk"
    dev.write_bytes(bytes(2 * MIB))  # already zero: only the exit status can tell
    monkeypatch.setattr(C, "run_method", lambda m, p, s: (5, "I/O error"))
    result = _erase_file(monkeypatch, C.DiskFacts(str(dev), "virtio", 2 * MIB))
    assert (result.result, result.method) == ("failed", "")
    assert [(a["method"], a["rc"], a["verified"]) for a in result.attempts] == [("overwrite", 5, False)]


def test_a_read_only_disk_fails_without_a_command() -> None:
    result = C.erase_disk(C.DiskFacts("vdb", "virtio", G, read_only=True))
    assert (result.result, result.attempts) == ("failed", []) and "read-only" in result.detail


def _erase_file(monkeypatch: pytest.MonkeyPatch, facts: object) -> object:
    """erase_disk on a regular file standing in for a block device (its name is the file's path)."""
    monkeypatch.setattr(C.os, "O_DIRECT", 0)  # tmpfs refuses O_DIRECT; the page cache is the file here
    return C.erase_disk(facts, dev=facts.name)  # type: ignore[attr-defined]


@pytest.mark.parametrize("disks, result", [
    ([("erased", "zeroout"), ("erased", "nvme-format-erase")], "clean"),
    ([("erased", "zeroout"), ("failed", "")], "failed"),
    ([], "failed"),  # no disk found is no proof of anything
])
def test_report_result(disks: list[tuple[str, str]], result: str) -> None:
    results = [C.DiskResult(f"d{i}", "virtio", G, "", "", r, m) for i, (r, m) in enumerate(disks)]
    report = C.build_report({"mac": "52:54:00:AA:BB:CC", "token": "t", "build": "b", "image": "cleaner"}, results)
    assert report["result"] == result and report["mac"] == "52:54:00:aa:bb:cc"
    assert C.clean_url("http://10.0.2.2:8080/report") == "http://10.0.2.2:8080/clean"
