"""The package boundaries hold: lower stages never import higher ones, and SQL lives only in toolkit/state."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TOOLKIT = Path(__file__).resolve().parents[2] / "toolkit"

# What each package may import (besides itself). The flow reads bottom-up: core, image and state
# at the bottom; bake and the store above them; inventory -> fleet -> boot and rollout on top; the
# BMC layer knows only core (it takes endpoints, never inventory hosts); the lab drives BMCs only.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "image": {"core"},
    "state": {"core"},
    "store": {"core", "image", "state"},
    "bake": {"core", "image", "store"},
    "bmc": {"core"},
    "inventory": {"core", "image", "bmc"},
    "fleet": {"core", "image", "state", "store", "inventory", "bmc"},
    "boot": {"core", "image", "state", "store", "inventory", "fleet"},
    "rollout": {"core", "image", "state", "store", "inventory", "fleet", "bmc"},
    "lab": {"core", "bmc"},
    "role": {"core", "image", "bake"},
    "nightly": {"core", "image", "state", "store", "bake", "lab", "rollout", "fleet"},
    "runs": {"core", "bake", "rollout", "state", "nightly"},
    "access": {"core", "state", "inventory", "fleet"},
}


def _package(path: Path) -> str:
    rel = path.relative_to(TOOLKIT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "toolkit" else [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("toolkit.") and n.split(".")[1] != "__version__"}
    return found


SOURCES = sorted(p for p in TOOLKIT.rglob("*.py") if _package(p) not in ("cli", "__init__"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(TOOLKIT)))
def test_lower_packages_never_import_higher_ones(path: Path) -> None:
    pkg = _package(path)
    assert pkg in ALLOWED, f"new package {pkg!r}: add it to ALLOWED with what it may import"
    wrong = _imports(path) - ALLOWED[pkg] - {pkg}
    assert not wrong, f"{path.relative_to(TOOLKIT)} ({pkg}) imports {sorted(wrong)}"


def test_sql_only_in_the_state_package() -> None:
    sql = re.compile(r"\.execute\(|\bSELECT\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|\bDELETE FROM\b")
    offenders = [str(p.relative_to(TOOLKIT)) for p in TOOLKIT.rglob("*.py")
                 if _package(p) != "state" and sql.search(p.read_text())]
    assert offenders == []


def test_toolkit_reads_like_the_flow() -> None:
    top = sorted(p.name for p in TOOLKIT.iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert {"bake", "store", "boot", "bmc", "rollout", "fleet", "lab", "state", "inventory", "image",
            "core", "cli"} <= set(top)
    loose = sorted(p.name for p in TOOLKIT.glob("*.py") if p.name != "__init__.py")
    assert loose == ["runs.py"], loose  # one cross-stage view; everything else lives in a package
