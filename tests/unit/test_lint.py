"""Linters and the type checker run as ordinary tests."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else (shutil.which(name) or name)


def test_ruff_clean():
    r = subprocess.run([_tool("ruff"), "check", "toolkit", "tests", "bench"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean():
    r = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_mirror_hostnames_committed():
    """Mirror host names come from the build host's apt sources, never from the repository."""
    r = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    offenders = []
    for name in r.stdout.split():
        path = ROOT / name
        if not path.is_file() or path.suffix in {".png", ".gz"}:
            continue
        text = path.read_text(errors="ignore")
        for needle in ("deb.debian.org", "security.debian.org", "ftp.debian.org", "archive.ubuntu.com",
                       "snapshot.debian.org"):
            if needle in text and name != "tests/unit/test_lint.py":
                offenders.append(f"{name}: {needle}")
    assert not offenders, offenders


def test_test_file_names_are_unique_across_folders():
    """tests/unit and tests/integration are not packages: two test files of one name collide when one
    pytest run collects both ("import file mismatch"), which only the whole suite does."""
    names: dict[str, list[str]] = {}
    for p in (ROOT / "tests").rglob("test_*.py"):
        names.setdefault(p.name, []).append(str(p.relative_to(ROOT)))
    assert {n: ps for n, ps in names.items() if len(ps) > 1} == {}
