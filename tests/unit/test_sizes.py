"""Rooms stay small: no module in toolkit/ over 600 lines, no class that defines over 30 methods.

A class composed of rooms (state's ``Repo``) is measured by what each room defines: that is where
a reader has to hold it in mind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TOOLKIT = Path(__file__).resolve().parents[2] / "toolkit"
MAX_LINES = 600
MAX_METHODS = 30
SOURCES = sorted(TOOLKIT.rglob("*.py"))


def _methods(cls: ast.ClassDef) -> int:
    return sum(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in cls.body)


def classes_over(text: str, limit: int = MAX_METHODS) -> list[str]:
    return [f"{n.name} ({_methods(n)})" for n in ast.walk(ast.parse(text))
            if isinstance(n, ast.ClassDef) and _methods(n) > limit]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(TOOLKIT)))
def test_no_module_over_600_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(TOOLKIT)))
def test_no_class_over_30_methods(path: Path) -> None:
    assert classes_over(path.read_text()) == []


def test_the_method_count_sees_a_big_class() -> None:
    body = "".join(f"    def m{i}(self): ...\n" for i in range(MAX_METHODS + 1))
    assert classes_over(f"class Big:\n{body}") == [f"Big ({MAX_METHODS + 1})"]
    assert classes_over(f"class Fine:\n{body[: body.rindex('    def')]}") == []
