from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.core.errors import SpecError
from toolkit.image.spec import ImageSpec, load_image, validate_all

ROOT = Path(__file__).resolve().parents[2]
BROKEN = Path(__file__).parent / "data" / "broken_specs"


def test_shipped_specs_are_valid():
    assert validate_all(ROOT / "images", ROOT / "roles") == []


def test_web_layers_on_base():
    web = load_image("web", ROOT / "images", ROOT / "roles")
    names = [r.name for r in web.roles]
    assert names[:3] == ["netboot", "hardening", "golden_agent"] and names[-1] == "web"
    assert "openssh-server" in web.packages
    assert {c.name for c in web.checks} >= {"agent-enabled", "http-ok"}


def test_broken_specs_each_reported_with_file_and_path():
    problems = validate_all(BROKEN / "images", BROKEN / "roles")
    text = "\n".join(problems)
    assert "images/unknown_key.yaml: .packges: unknown key" in text
    assert "images/wrong_type.yaml: .roles[0].vars: Input should be a valid dictionary" in text
    assert "images/missing_role.yaml: .roles[1].name: role 'no_such_role' not found" in text
    assert "images/bad_yaml.yaml:3:" in text and "not valid YAML" in text
    assert len(problems) == 4


def test_validate_cli_exits_2_without_traceback(capsys, monkeypatch):
    monkeypatch.setenv("GOLDEN_PROJECT", str(BROKEN))
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("images/") == 4


def test_validate_cli_ok(capsys, monkeypatch):
    monkeypatch.setenv("GOLDEN_PROJECT", str(ROOT))
    assert main(["--json", "validate"]) == 0
    assert '"ok": true' in capsys.readouterr().out


def test_check_needs_exactly_one_kind():
    with pytest.raises(ValueError, match="exactly one"):
        ImageSpec.model_validate({"name": "x", "checks": [{"name": "c", "file": "/a", "command": "true"}]})


def test_unknown_image_names_known_ones():
    with pytest.raises(SpecError, match="known images: base, cleaner, seeded, web"):
        load_image("nope", ROOT / "images", ROOT / "roles")


def test_spec_json_round_trip():
    spec = load_image("web", ROOT / "images", ROOT / "roles")
    assert ImageSpec.model_validate_json(spec.model_dump_json()) == spec
