"""Spec ``vars`` checked against each role's meta/argument_specs.yml, as Ansible would at bake time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from toolkit.cli import main
from toolkit.image.roleargs import argspec_file_problems, role_var_problems
from toolkit.image.spec import validate_all

ROOT = Path(__file__).resolve().parents[2]

# A role using every kind of option the contract supports.
ARGSPEC = {"argument_specs": {"main": {"short_description": "test role", "options": {
    "t_name": {"type": "str", "required": True, "description": "no default anywhere"},
    "t_port": {"type": "int", "default": 80},
    "t_ratio": {"type": "float", "default": 0.5},
    "t_on": {"type": "bool", "default": True},
    "t_dir": {"type": "path", "default": "/srv"},
    "t_any": {"type": "raw"},
    "t_mode": {"type": "str", "choices": ["fast", "safe"], "default": "safe"},
    "t_ports": {"type": "list", "elements": "int", "default": []},
    "t_site": {"type": "dict", "options": {"host": {"type": "str", "required": True}, "tls": {"type": "bool"}}},
    "t_defaulted": {"type": "str", "required": True},
    "t_old": {"type": "str", "aliases": ["t_legacy"]},
}}}}


@pytest.fixture
def roles_dir(tmp_path: Path) -> Path:
    role = tmp_path / "roles" / "t"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (role / "tasks").mkdir()
    (role / "tasks" / "main.yml").write_text("---\n[]\n")
    (role / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(ARGSPEC))
    # A required variable with a value in defaults/main.yml is satisfied, as in Ansible.
    (role / "defaults" / "main.yml").write_text("t_defaulted: from-defaults\n")
    return tmp_path / "roles"


OK = {"t_name": "x"}

# (vars given to role t, expected problem fragments; [] means valid)
CASES = [
    ({"t_name": "x"}, []),
    ({"t_name": "x", "t_port": 8080, "t_ratio": 2, "t_on": "yes", "t_dir": "/var", "t_any": [1, {"a": 2}],
      "t_mode": "fast", "t_ports": [1, "2"], "t_site": {"host": "h", "tls": False}, "t_legacy": "alias ok"}, []),
    ({**OK, "t_port": "{{ some_port }}"}, []),  # templated: typed only once Ansible renders it
    ({**OK, "t_prot": 1}, [".roles[0].vars.t_prot: role 't' has no variable 't_prot' (did you mean 't_port'?"]),
    ({**OK, "t_port": "eighty"}, [".roles[0].vars.t_port: role 't': argument 't_port' is of type str and we "
                                  "were unable to convert to int"]),
    ({**OK, "t_on": "maybe"}, [".roles[0].vars.t_on: role 't': argument 't_on' is of type str and we were "
                               "unable to convert to bool"]),
    ({**OK, "t_ratio": "half"}, [".roles[0].vars.t_ratio: role 't': argument 't_ratio'"]),
    ({**OK, "t_mode": "reckless"}, [".roles[0].vars.t_mode: role 't': value of t_mode must be one of: fast, safe"]),
    ({**OK, "t_ports": [1, "x"]}, [".roles[0].vars.t_ports: role 't': Elements value for option 't_ports'"]),
    ({**OK, "t_ports": "80"}, []),  # Ansible turns a scalar into a one-element list
    ({**OK, "t_site": "host"}, [".roles[0].vars.t_site: role 't': dictionary requested"]),
    ({**OK, "t_site": {"tls": True}}, [".roles[0].vars.t_site: role 't': missing required arguments: host"]),
    ({**OK, "t_site": {"host": "h", "port": 1}}, [".roles[0].vars.t_site: role 't': unknown key 't_site.port'"]),
    ({}, [".roles[0].vars.t_name: role 't' requires this variable (no default in roles/t/defaults/main.yml)"]),
]


@pytest.mark.parametrize(("given", "expected"), CASES, ids=[str(sorted(c[0])) + repr(c[1][:1]) for c in CASES])
def test_vars_against_argument_spec(roles_dir: Path, given: dict, expected: list[str]) -> None:
    problems = role_var_problems([("t", given)], "images/x.yaml", roles_dir)
    # Each expected fragment is in the first problem about its variable; no other variable is blamed.
    assert {p.split(": role")[0] for p in problems} == {"images/x.yaml: " + f.split(": role")[0] for f in expected}
    for fragment in expected:
        first = next(p for p in problems if p.startswith("images/x.yaml: " + fragment.split(": role")[0] + ":"))
        assert fragment in first, problems


def test_roles_are_indexed_in_spec_order(roles_dir: Path) -> None:
    problems = role_var_problems([("t", OK), ("t", {"t_name": "x", "nope": 1})], "images/x.yaml", roles_dir)
    assert problems == [problems[0]] and ".roles[1].vars.nope: role 't' has no variable 'nope'" in problems[0]


def test_role_without_argument_spec_cannot_take_vars(roles_dir: Path) -> None:
    (roles_dir / "t" / "meta" / "argument_specs.yml").unlink()
    assert role_var_problems([("t", {})], "images/x.yaml", roles_dir) == []
    [problem] = role_var_problems([("t", {"a": 1})], "images/x.yaml", roles_dir)
    assert "role 't' has no meta/argument_specs.yml" in problem


def test_unknown_type_in_argument_spec_is_named(roles_dir: Path) -> None:
    spec = {"argument_specs": {"main": {"options": {"a": {"type": "integer"}, "b": {"type": "list", "elements": "x"}}}}}
    (roles_dir / "t" / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(spec))
    problems = argspec_file_problems(roles_dir / "t", "roles/t/meta/argument_specs.yml")
    assert [p.split(": unknown")[0] for p in problems] == [
        "roles/t/meta/argument_specs.yml: .argument_specs.main.options.a.type",
        "roles/t/meta/argument_specs.yml: .argument_specs.main.options.b.elements",
    ]
    assert role_var_problems([("t", {"a": 1})], "images/x.yaml", roles_dir) == problems


def test_every_shipped_role_has_an_argument_spec_covering_its_defaults() -> None:
    for role in sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir()):
        assert argspec_file_problems(role, role.name) == [], role.name
        spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
        defaults_file = role / "defaults" / "main.yml"  # a role without options (cleaner) has none to cover
        defaults = (yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.exists() else {}
        undeclared = set(defaults) - set(spec["argument_specs"]["main"]["options"])
        assert not undeclared, f"{role.name}: defaults not in meta/argument_specs.yml: {sorted(undeclared)}"


def test_validate_refuses_a_mistyped_and_an_unknown_var(tmp_path: Path, capsys, monkeypatch) -> None:
    shutil.copytree(ROOT / "roles", tmp_path / "roles")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "web.yaml").write_text(yaml.safe_dump({"name": "web", "roles": [
        {"name": "netboot"}, {"name": "web", "vars": {"web_port": "eighty", "web_mesage": "hi"}}]}))
    problems = validate_all(tmp_path / "images", tmp_path / "roles")
    assert len(problems) == 2, problems
    assert problems[0].startswith("images/web.yaml: .roles[1].vars.web_mesage: role 'web' has no variable")
    assert problems[1].startswith("images/web.yaml: .roles[1].vars.web_port: role 'web': argument 'web_port'")
    monkeypatch.setenv("GOLDEN_PROJECT", str(tmp_path))
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "web_mesage" in err and "did you mean 'web_message'?" in err and "Traceback" not in err


@pytest.mark.parametrize(("text", "expected"), [
    ("argument_specs: [unclosed\n", "not valid YAML"),
    ("argument_specs: []\n", ".argument_specs.main: expected a mapping"),
    ("[]\n", ".argument_specs.main: expected a mapping"),
    ("argument_specs: {main: {options: [a]}}\n", ".argument_specs.main.options: expected a mapping"),
    ("argument_specs: {main: {options: {a: 1}}}\n", ".argument_specs.main.options.a: expected a mapping"),
])
def test_broken_argument_spec_is_a_problem_not_a_traceback(roles_dir: Path, text: str, expected: str) -> None:
    (roles_dir / "t" / "meta" / "argument_specs.yml").write_text(text)
    [problem] = role_var_problems([("t", {"t_name": "x"})], "images/x.yaml", roles_dir)
    assert problem.startswith("roles/t/meta/argument_specs.yml:") and expected in problem, problem


def test_malformed_option_is_a_problem_not_a_traceback(roles_dir: Path) -> None:
    spec = {"argument_specs": {"main": {"options": {"a": {"type": "str", "choices": 5}}}}}
    (roles_dir / "t" / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(spec))
    problems = role_var_problems([("t", {"a": "x"})], "images/x.yaml", roles_dir)
    assert len(problems) == 1 and problems[0].startswith("images/x.yaml: .roles[0].vars.a: role 't': "), problems
