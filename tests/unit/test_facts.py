"""Each fact in one place: the image-name and build-id patterns, the mount-table scanner, the run-id
scheme and the CLI's time format each live in one module that everything else imports."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.core.mounts import mounts_under, unescape
from toolkit.image.ref import BUILD_REF, IMAGE_NAME, IMAGE_NAME_RE, REF_RE

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

