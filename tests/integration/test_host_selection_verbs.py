"""Every host-selecting verb selects exactly what ``ansible -i SAME PATTERN --list-hosts --limit SAME`` does.

Three inventories (an INI file with ranges and nested children, a YAML file, two sources at once)
times five pattern/limit pairs, each asked of the real ``ansible`` of this venv and of every verb's
``--list-hosts`` (which goes through the verb's own options: ``-i``, ``-l``, the vault options).
``golden fleet --json`` and ``golden inventory --json`` are also checked by what they print, and
``ANSIBLE_INVENTORY`` alone (no ``-i``) must be enough.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.cli import main

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent

INI = """\
[rack1]
n[01:04]

[rack2]
n[05:07]

[web]
n01
n02
n05

[db:children]
dbrack

[dbrack]
n03
n07
"""

YAML = """\
all:
  children:
    rack1:
      hosts: {n01: {}, n02: {}, n03: {}}
      children:
        web: {hosts: {n01: {}, n04: {}}}
    rack2:
      hosts: {n04: {}, n05: {}, n06: {}}
    db:
      hosts: {n03: {}, n06: {}}
"""

EXTRA = """\
[rack2]
n08
[web]
n08
"""

CASES = [  # (pattern, limit)
    ("all", "rack1"),
    ("web", "rack1:rack2:!db"),
    ("rack1:&web", "n0*"),
    ("rack*", "rack1[1:3]"),
    ("~n0[1-5]", "all:!web"),
]

# every verb that selects hosts, with what it needs besides the pattern; None: it takes no pattern
VERBS: list[tuple[str, list[str], bool]] = [
    ("inventory", [], True), ("power", ["status"], True), ("bootdev", ["pxe"], True), ("reimage", [], True),
    ("fleet", [], True), ("drift", [], True), ("serve", [], False), ("report", ["--out", "x.html"], False),
]


@pytest.fixture(scope="module")
def inventories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    d = tmp_path_factory.mktemp("inv")
    (d / "hosts.ini").write_text(INI)
    (d / "hosts.yml").write_text(YAML)
    (d / "extra.ini").write_text(EXTRA)
    (d / "vault-pw").write_text("table-pw\n")
    return {"ini": [str(d / "hosts.ini")], "yaml": [str(d / "hosts.yml")],
            "two": [str(d / "hosts.ini"), str(d / "extra.ini")]}


def _ansible(sources: list[str], pattern: str, limit: str) -> list[str]:
    args = [str(BIN / "ansible"), *(a for s in sources for a in ("-i", s)), pattern, "--list-hosts", "--limit", limit]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout
    lines = out.splitlines()
    assert lines[0].strip().startswith("hosts ("), out
    return [line.strip() for line in lines[1:] if line.strip()]


@pytest.fixture(scope="module")
def expected(inventories: dict[str, list[str]]) -> dict[tuple[str, int], list[str]]:
    return {(name, i): _ansible(src, p, lim) for name, src in inventories.items() for i, (p, lim) in enumerate(CASES)}


def _golden(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    capsys.readouterr()
    assert main(["--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for k in [k for k in os.environ if k.startswith(("ANSIBLE_", "GOLDEN_INVENTORY"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GOLDEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ANSIBLE_CONFIG", str(tmp_path / "no-ansible.cfg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("verb,extra,pattern_arg", VERBS, ids=[v[0] for v in VERBS])
def test_every_verb_selects_what_ansible_selects(verb: str, extra: list[str], pattern_arg: bool, home: Path,
                                                  inventories: dict[str, list[str]],
                                                  expected: dict[tuple[str, int], list[str]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for name, sources in inventories.items():
        for i, (pattern, limit) in enumerate(CASES):
            if not pattern_arg and pattern != "all":
                continue  # serve and report act on the whole inventory: only --limit narrows them
            argv = [verb, *([pattern] if pattern_arg else []), *extra, *(a for s in sources for a in ("-i", s)),
                    "-l", limit, "--vault-id", f"t@{Path(sources[0]).parent / 'vault-pw'}", "--list-hosts"]
            got = _golden(capsys, *argv)
            assert got == expected[name, i], (verb, name, pattern, limit)


def test_ansible_inventory_alone_is_enough(home: Path, inventories: dict[str, list[str]],
                                           expected: dict[tuple[str, int], list[str]],
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name, sources in inventories.items():
        monkeypatch.setenv("ANSIBLE_INVENTORY", ",".join(sources))
        for i, (pattern, limit) in enumerate(CASES):
            assert _golden(capsys, "power", pattern, "status", "-l", limit, "--list-hosts") == expected[name, i]
            assert [h["name"] for h in _golden(capsys, "inventory", pattern, "-l", limit)] == expected[name, i]
            fleet = sorted(h["name"] for h in _golden(capsys, "fleet", pattern, "-l", limit))
            assert fleet == sorted(expected[name, i]), (name, pattern, limit)


def test_ansible_cfg_inventory_is_honoured(home: Path, inventories: dict[str, list[str]],
                                           expected: dict[tuple[str, int], list[str]],
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = home / "ansible.cfg"
    cfg.write_text(f"[defaults]\ninventory = {','.join(inventories['two'])}\n")
    monkeypatch.setenv("ANSIBLE_CONFIG", str(cfg))
    pattern, limit = CASES[1]
    assert _golden(capsys, "drift", pattern, "-l", limit, "--list-hosts") == expected["two", 1]
