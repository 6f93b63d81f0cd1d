"""golden role test, with a fake molecule that records its arguments (the real run is in
tests/integration/test_role_dev_loop.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.role import scenario
from toolkit.role.scaffold import new_role

FAKE = """#!/bin/sh
printf '%s\\n' "$@" > "{record}/argv"
printf '%s' "$GOLDEN_MOLECULE_CHROOT" > "{record}/chroot"
mkdir -p "$GOLDEN_MOLECULE_CHROOT"
echo "fake molecule output"
exit {rc}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    proj = tmp_path / "proj"
    (proj / "images").mkdir(parents=True)
    new_role(proj, "demo")
    monkeypatch.setenv("GOLDEN_PROJECT", str(proj))
    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GOLDEN_TEST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scenario, "lint_roles", lambda *a, **k: None)
    monkeypatch.setattr(scenario, "ensure_chroot", lambda: tmp_path / "base-chroot")
    return proj


def _fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rc: int) -> Path:
    record = tmp_path / "record"
    record.mkdir(exist_ok=True)
    fake = tmp_path / "molecule"
    fake.write_text(FAKE.format(record=record, rc=rc))
    fake.chmod(0o755)
    monkeypatch.setattr(scenario, "tool_path", lambda name: str(fake))
    return record


@pytest.mark.parametrize(("flags", "argv"), [
    ([], ["test", "-s", "demo"]),
    (["--keep"], ["test", "-s", "demo", "--destroy", "never"]),
    (["--debug"], ["--debug", "test", "-s", "demo"]),
])
def test_molecule_command(project: Path, tmp_path: Path, monkeypatch, capsys, flags: list[str], argv) -> None:
    record = _fake(monkeypatch, tmp_path, 0)
    assert main(["role", "test", "demo", *flags]) == 0
    assert (record / "argv").read_text().split() == argv
    copy = Path((record / "chroot").read_text())
    out = capsys.readouterr().out
    assert "ok: role demo passed" in out
    if "--keep" in flags:
        assert copy.is_dir() and f"kept: the converged chroot is at {copy}" in out
    else:
        assert not copy.exists(), "the copy is removed even when molecule left it behind"
        assert not (tmp_path / "cache" / "molecule").exists() or not any((tmp_path / "cache" / "molecule").iterdir())


def test_failed_scenario_exits_1_naming_the_role(project: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    _fake(monkeypatch, tmp_path, 3)
    assert main(["role", "test", "demo"]) == 1
    err = capsys.readouterr().err
    assert "molecule test -s demo failed (exit 3)" in err and "Traceback" not in err


def test_json_keeps_tool_output_out_of_stdout(project: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    _fake(monkeypatch, tmp_path, 0)
    assert main(["--json", "role", "test", "demo"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["role"] == "demo" and doc["kept"] is None
    assert "fake molecule output" in Path(doc["log"]).read_text()


def test_unknown_role_exits_2(project: Path, capsys) -> None:
    assert main(["role", "test", "nope"]) == 2
    assert "no role named 'nope' in" in capsys.readouterr().err


def test_role_without_scenario_exits_2(project: Path, capsys) -> None:
    shutil.rmtree(project / "molecule" / "demo")
    assert main(["role", "test", "demo"]) == 2
    assert "has no Molecule scenario" in capsys.readouterr().err
