"""Public functions and classes carry a docstring in at least 80% of cases, in every package of toolkit/.

A one-line docstring is enough; names that say it all (``__init__``, private helpers) are not counted.
The floor is per package so one well-documented room cannot hide an undocumented one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TOOLKIT = Path(__file__).resolve().parents[2] / "toolkit"
FLOOR = 0.80
PACKAGES = sorted(p for p in TOOLKIT.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def public_defs(text: str) -> tuple[int, list[str]]:
    """(documented, undocumented names) of the public functions, methods and classes in one module."""
    done, missing = 0, []

    def walk(node: ast.AST) -> None:
        nonlocal done
        for n in ast.iter_child_nodes(node):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if not n.name.startswith("_"):
                    if ast.get_docstring(n):
                        done += 1
                    else:
                        missing.append(f"{n.name}:{n.lineno}")
                if isinstance(n, ast.ClassDef):
                    walk(n)

    walk(ast.parse(text))
    return done, missing


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_public_definitions_are_documented(package: Path) -> None:
    done, missing = 0, []
    for path in sorted(package.rglob("*.py")):
        d, m = public_defs(path.read_text())
        done += d
        missing += [f"{path.relative_to(TOOLKIT)}:{x}" for x in m]
    total = done + len(missing)
    assert total == 0 or done / total >= FLOOR, f"{done}/{total} documented; missing: {missing}"


def test_the_count_sees_an_undocumented_method_and_skips_private_ones() -> None:
    text = 'class A:\n    """doc"""\n    def run(self): ...\n    def _x(self): ...\ndef f():\n    """doc"""\n'
    assert public_defs(text) == (2, ["run:3"])
