"""`golden bake` misuse gets clean errors: exit 2, the file and path, no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from toolkit.bake.hook import playbook
from toolkit.cli import main
from toolkit.core.progress import Progress, format_elapsed


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "roles" / "r1" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "r1" / "tasks" / "main.yml").write_text("[]\n")
    return tmp_path


def _golden(project: Path, tmp_path: Path, *argv: str) -> int:
    return main(["--project", str(project), "--home", str(tmp_path / "home"), *argv])


def test_missing_image_argument(project, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _golden(project, tmp_path, "bake")
    assert info.value.code == 2
    assert "image" in capsys.readouterr().err


def test_unknown_image(project, tmp_path, capsys):
    (project / "images" / "base.yaml").write_text("name: base\n")
    assert _golden(project, tmp_path, "bake", "nope") == 2
    err = capsys.readouterr().err
    assert "images/nope.yaml: no such image spec (known images: base)" in err
    assert "Traceback" not in err


def test_invalid_spec(project, tmp_path, capsys):
    (project / "images" / "bad.yaml").write_text("name: bad\npackages: curl\nbogus: 1\n")
    assert _golden(project, tmp_path, "bake", "bad") == 2
    err = capsys.readouterr().err
    assert "images/bad.yaml: .packages:" in err
    assert "images/bad.yaml: .bogus: unknown key" in err


def test_missing_role(project, tmp_path, capsys):
    (project / "images" / "x.yaml").write_text("name: x\nroles:\n  - name: nope\n")
    assert _golden(project, tmp_path, "bake", "x") == 2
    assert "images/x.yaml: .roles[0].name: role 'nope' not found" in capsys.readouterr().err


def test_json_errors_are_json(project, tmp_path, capsys):
    assert _golden(project, tmp_path, "bake", "nope", "--json") == 2
    out = json.loads(capsys.readouterr().out)
    assert out["error"] == "SpecError" and "no such image spec" in out["message"]


def test_locked_image_is_a_clean_error(project, tmp_path, capsys):
    from toolkit.store.artifacts import Store

    (project / "images" / "x.yaml").write_text("name: x\n")
    with Store(tmp_path / "home" / "store").lock("x"):
        assert _golden(project, tmp_path, "bake", "x", "--force") == 1
    err = capsys.readouterr().err
    assert "image 'x' is locked by bake pid" in err and "Traceback" not in err


def test_missing_mirror_is_an_input_error(project, tmp_path, capsys, monkeypatch):
    """With no mirror in the spec, the config or the host's apt sources, say where to set one."""
    monkeypatch.setattr("toolkit.bake.aptsources.host_sources", lambda *a, **k: [])
    (project / "images" / "x.yaml").write_text("name: x\n")
    assert _golden(project, tmp_path, "bake", "x") == 2
    err = capsys.readouterr().err
    assert "no package mirror for 'bookworm'" in err and "base.mirror" in err
    # nothing was left behind by the aborted bake, and its run record says why
    from toolkit.store.artifacts import Store

    assert Store(tmp_path / "home" / "store").stale_staging("x") == []
    (run,) = (tmp_path / "home" / "runs").iterdir()
    assert (run / "status").read_text().strip() == "failed"
    assert "no package mirror" in (run / "error").read_text()


def test_playbook_keeps_role_order_and_vars():
    book = playbook([{"name": "b", "vars": {"x": 1}}, {"name": "a"}])
    assert book[0]["hosts"] == "image"
    assert book[0]["roles"] == [{"role": "b", "vars": {"x": 1}}, {"role": "a", "vars": {}}]


def test_progress_is_silent_when_disabled(capsys):
    with Progress("bake x", enabled=False) as p:
        p.phase("root.d/08-debootstrap")
    assert capsys.readouterr().err == ""


def test_progress_shows_phase_and_elapsed():
    import io

    buf = io.StringIO()
    with Progress("bake x", enabled=True, stream=buf, tick=60) as p:
        p.phase("root.d/08-debootstrap")
    assert "bake x: root.d/08-debootstrap, 0s" in buf.getvalue()
    assert format_elapsed(83) == "1m23s"


def test_bake_module_has_no_logic():
    """The CLI module parses and renders; everything else lives in toolkit.bake."""
    src = (Path(__file__).resolve().parents[2] / "toolkit" / "cli" / "bake.py").read_text()
    assert "toolkit.core.run" not in src and "subprocess" not in src
    assert shutil.which("true")
