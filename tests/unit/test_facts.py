"""Each fact in one place: the image-name and build-id patterns, the mount-table scanner, the run-id
scheme and the CLI's time format each live in one module that everything else imports."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from toolkit.cli.output import when
from toolkit.core.mounts import mounts_under, unescape
from toolkit.image.ref import BUILD_REF, IMAGE_NAME, IMAGE_NAME_RE, REF_RE
from toolkit.runs.ids import RunId, new_run_id, parse_run_id

TOOLKIT = Path(__file__).resolve().parents[2] / "toolkit"


def _sources() -> list[Path]:
    return sorted(TOOLKIT.rglob("*.py"))


@pytest.mark.parametrize(("fact", "home"), [
    (IMAGE_NAME, "image/ref.py"),
    (BUILD_REF, "image/ref.py"),
    ("/proc/mounts", "core/mounts.py"),
    ("/proc/self/mounts", None),
])
def test_a_fact_is_written_once(fact: str, home: str | None) -> None:
    copies = [str(p.relative_to(TOOLKIT)) for p in _sources() if fact in p.read_text()]
    assert copies == ([home] if home else [])


def test_the_patterns_are_what_they_promise() -> None:
    assert IMAGE_NAME_RE.match("web-01_x") and not IMAGE_NAME_RE.match("Web") and not IMAGE_NAME_RE.match("1x")
    assert not IMAGE_NAME_RE.match("a" * 64) and IMAGE_NAME_RE.match("a" * 63)
    assert REF_RE.match("20261126-0a1b2c3d") and not REF_RE.match(".hidden") and not REF_RE.match("a/b")


def test_every_octal_escape_of_the_mount_table_is_undone(tmp_path: Path) -> None:
    assert unescape(r"/s/a\040b\011c\012d\134e") == "/s/a b\tc\nd\\e"
    mounts = tmp_path / "mounts"
    mounts.write_text("tmpfs /s/x/with\\011tab tmpfs rw 0 0\ntmpfs /s/x/back\\134slash tmpfs rw 0 0\n")
    assert sorted(mounts_under(Path("/s/x"), mounts)) == ["/s/x/back\\slash", "/s/x/with\ttab"]



def test_the_cli_shows_times_in_utc_labelled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert when(1796647216.0) == "2026-12-07 12:40:16 UTC" and when(None) == "-"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_one_time_formatter_in_the_cli() -> None:
    others = [str(p.relative_to(TOOLKIT)) for p in sorted((TOOLKIT / "cli").glob("*.py"))
              if p.name != "output.py" and re.search(r"\bstrftime\(|\blocaltime\(|\bgmtime\(", p.read_text())]
    assert others == []


def test_one_run_id_scheme() -> None:
    at = datetime(2026, 12, 7, 12, 40, 16, tzinfo=UTC)
    for kind, subject in (("bake", "web-01"), ("nightly", ""), ("reimage", "")):
        rid = new_run_id(kind, subject, now=at)
        assert re.fullmatch(rf"20261207T124016Z-{kind}-{subject + '-' if subject else ''}[0-9a-f]{{6}}", rid)
        assert parse_run_id(rid) == RunId(at.timestamp(), kind, subject)
    assert parse_run_id("20261207-124016-abcdef") is None
    generators = [str(p.relative_to(TOOLKIT)) for p in _sources()
                  if re.search(r"token_hex\(3\)", p.read_text())]
    assert generators == ["runs/ids.py"]
