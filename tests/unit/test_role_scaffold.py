"""golden role new: name rules, never overwriting, and a scaffold that golden validate accepts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from toolkit.cli import main
from toolkit.core.errors import InputError
from toolkit.image.roleargs import argspec_file_problems
from toolkit.image.spec import validate_all
from toolkit.role.scaffold import FILES, new_role

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    shutil.copytree(ROOT / "roles" / "netboot", tmp_path / "roles" / "netboot")
    return tmp_path


@pytest.mark.parametrize(("name", "ok"), [
    ("web2", True), ("a", True), ("my_role", True), ("a" * 63, True),
    ("", False), ("Web", False), ("2web", False), ("my-role", False), ("_x", False), ("a" * 64, False),
    ("shared", False), ("../x", False),
])
def test_role_names(project: Path, capsys, monkeypatch, name: str, ok: bool) -> None:
    monkeypatch.setenv("GOLDEN_PROJECT", str(project))
    assert main(["role", "new", name]) == (0 if ok else 2)
    err = capsys.readouterr().err
    assert ("Traceback" not in err) and (ok or "is not allowed" in err)


def test_scaffold_makes_every_file_and_never_overwrites(project: Path, capsys, monkeypatch) -> None:
    made = new_role(project, "demo")
    assert list(made.files) == [rel.format(name="demo") for rel, _ in FILES]
    assert all((project / f).is_file() for f in made.files)
    assert not any("__ROLE__" in (project / f).read_text() for f in made.files)
    assert not list(project.glob(".golden-new-*")), "the aside folder is cleaned up"
    before = (project / "roles/demo/tasks/main.yml").read_text()
    (project / "roles/demo/tasks/main.yml").write_text(before + "# edited\n")
    monkeypatch.setenv("GOLDEN_PROJECT", str(project))
    assert main(["role", "new", "demo"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (project / "roles/demo/tasks/main.yml").read_text().endswith("# edited\n")


def test_scaffold_refuses_a_leftover_scenario(project: Path) -> None:
    (project / "molecule" / "demo").mkdir(parents=True)
    with pytest.raises(InputError, match="already exists"):
        new_role(project, "demo")
    assert not (project / "roles" / "demo").exists()


def test_scaffolded_role_is_a_contract_golden_validate_checks(project: Path) -> None:
    new_role(project, "demo")
    assert argspec_file_problems(project / "roles" / "demo", "demo") == []
    for f in ("tasks/main.yml", "defaults/main.yml", "meta/main.yml"):
        yaml.safe_load((project / "roles" / "demo" / f).read_text())
    spec = {"name": "x", "roles": [{"name": "netboot"}, {"name": "demo", "vars": {"demo_message": "hi"}}]}
    (project / "images" / "x.yaml").write_text(yaml.safe_dump(spec))
    assert validate_all(project / "images", project / "roles") == []
    spec["roles"][1]["vars"] = {"demo_mesage": "hi"}
    (project / "images" / "x.yaml").write_text(yaml.safe_dump(spec))
    [problem] = validate_all(project / "images", project / "roles")
    assert problem.startswith("images/x.yaml: .roles[1].vars.demo_mesage: role 'demo' has no variable")
