"""The agent reads Secure Boot's state as the firmware left it in efivars, and golden serve accepts it only as a
boolean (or nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_agent_schedule import _load
from toolkit.boot.reports import ReportRejected, parse_report

ATTRS = b"\x06\x00\x00\x00"  # EFI variable attributes, then the value byte


@pytest.mark.parametrize("content, expect", [
    (ATTRS + b"\x01", True),
    (ATTRS + b"\x00", False),
    (b"\x01", None),  # too short to be a variable: not trusted either way
    (b"", None),
])
def test_secure_boot_from_efivars(tmp_path: Path, content: bytes, expect: bool | None) -> None:
    var = tmp_path / "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    var.write_bytes(content)
    assert _load().read_secure_boot(str(var)) is expect


def test_no_efivars_means_unknown(tmp_path: Path) -> None:
    assert _load().read_secure_boot(str(tmp_path / "absent")) is None


def _payload(**extra: object) -> dict:
    return {"mac": "52:54:00:ab:cd:ef", "build_id": "b1", "image": "base", "token": "t", "hostname": "n",
            "booted_at": "2026-12-07T10:00:00+00:00", "uptime_s": 1.0, "drift": [], "agent_version": "1", **extra}


@pytest.mark.parametrize("value", [True, False, None])
def test_report_carries_secure_boot(value: bool | None) -> None:
    report, _, _ = parse_report(_payload(secure_boot=value))
    assert report.secure_boot is value


def test_report_without_the_field_is_unknown() -> None:
    assert parse_report(_payload())[0].secure_boot is None


@pytest.mark.parametrize("bad", ["yes", 1, 0, [], {}])
def test_secure_boot_must_be_a_boolean(bad: object) -> None:
    with pytest.raises(ReportRejected, match="secure_boot"):
        parse_report(_payload(secure_boot=bad))
