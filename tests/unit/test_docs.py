"""The reference cannot fall behind the code: every verb and option is in golden.1 (generated from the
parser, and current), every golden.yaml key and every environment variable golden reads is in
docs/configuration.md, every verb's --help ends with examples, and the page renders with ``man -l``."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel, RootModel

from toolkit.cli import build_parser
from toolkit.cli.manpage import WIDTH, render_manpage
from toolkit.core.configschema import SECTIONS, schema_of
from toolkit.core.envvars import ENVIRONMENT

ROOT = Path(__file__).resolve().parents[2]
MANPAGE = ROOT / "docs" / "golden.1"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
# a read of the environment in golden's code: os.environ.get("X"), os.environ["X"], env.get("X"), pick("X", ...)
ENV_READ = re.compile(r"""(?:environ(?:\.get)?[(\[]|env\.get\(|pick\(|getenv\()\s*["']([A-Z][A-Z0-9_]+)["']""")
ENV_TUPLE = re.compile(r"""for e in \(([^)]*)\)""")  # os.environ.get(e) for e in ("A", B_CONST)


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def _verbs(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                out[f"{prefix}{name}"] = sp
                out |= _verbs(sp, f"{prefix}{name} ")
    return out


def test_manpage_is_current(parser, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", WIDTH)
    assert MANPAGE.read_text() == render_manpage(build_parser()), "run scripts/manpage"


def test_every_verb_and_option_is_in_the_manpage(parser) -> None:
    text = MANPAGE.read_text().replace("\\-", "-")
    for path, sp in _verbs(parser).items():
        assert f"golden {path}" in text, path
        for action in sp._actions:
            for opt in action.option_strings:
                assert opt in text, f"golden {path} {opt}"


def test_every_verb_has_examples_in_its_help(parser) -> None:
    top = {p: sp for p, sp in _verbs(parser).items() if " " not in p}
    for verb, sp in top.items():
        assert "examples:\n  golden " in sp.format_help(), verb


def test_manpage_renders_with_man() -> None:
    if shutil.which("man") is None:
        pytest.fail("man is missing: apt-get install man-db (scripts/apt-packages.txt)")
    out = subprocess.run(["man", "-l", str(MANPAGE)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": "0", "MANPAGER": "cat"})
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "golden reimage" in out.stdout and "ANSIBLE_INVENTORY" in out.stdout


def _keys(name: str, schema: object) -> list[str]:
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return [name]
    if issubclass(schema, RootModel):
        inner = schema.model_fields["root"].annotation.__args__[1]  # dict[str, Model]
        return [f"{name}.*.{f}" for f in inner.model_fields]
    return [f"{name}.{f}" for f in schema.model_fields]


def test_every_golden_yaml_key_is_in_the_reference() -> None:
    text = CONFIG_DOC.read_text()
    for name in SECTIONS:
        for key in _keys(name, schema_of(name)):
            assert f"`{key}`" in text, f"docs/configuration.md lacks golden.yaml key {key}"


def test_every_environment_variable_golden_reads_is_listed_and_documented() -> None:
    read: set[str] = set()
    for path in (ROOT / "toolkit").rglob("*.py"):
        src = path.read_text()
        read |= set(ENV_READ.findall(src))
        for group in ENV_TUPLE.findall(src):
            read |= set(re.findall(r'"([A-Z][A-Z0-9_]+)"', group))
    # the system's own, and COLUMNS (set, not read, by the man page renderer)
    read -= {"SUDO_USER", "HOME", "PATH", "USER", "_ARGCOMPLETE", "TMPDIR", "TERM", "LANG", "COLUMNS"}
    assert read - set(ENVIRONMENT) == set(), "add these to toolkit/core/envvars.py"
    doc, man = CONFIG_DOC.read_text(), MANPAGE.read_text().replace("\\-", "-")
    for name in ENVIRONMENT:
        assert f"`{name}`" in doc and name in man, name


README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)#\s]+\.(?:md|1))(?:#([a-z0-9_-]+))?\)")


def _anchors(path: Path) -> set[str]:
    return {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-")
            for h in re.findall(r"(?m)^#{1,4} (.+)$", path.read_text())}


def test_readme_is_the_pitch_with_the_two_command_quick_start() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "scripts/demo    # the main job" in text and "scripts/test    # install everything" in text
    for doc in ("concepts", "inventory", "reimage", "operations", "configuration", "testing", "benchmarks"):
        assert f"(docs/{doc}.md)" in text, doc


def test_links_between_readme_and_docs_resolve() -> None:
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target, anchor in LINK.findall(page.read_text()):
            path = (page.parent / target).resolve()
            if target.startswith("http"):
                continue
            assert path.is_file(), f"{page.name}: link to {target}"
            if anchor and path.suffix == ".md":
                assert anchor in _anchors(path), f"{page.name}: link to {target}#{anchor}"
