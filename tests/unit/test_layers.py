"""The package boundaries hold: lower stages never import higher ones, only toolkit/core starts processes,
SQL lives only in toolkit/state, and every module lives in a package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TOOLKIT = Path(__file__).resolve().parents[2] / "toolkit"

# What each package may import (besides itself). The flow reads bottom-up: core, image and state
# at the bottom; bake and the store above them; inventory -> fleet -> boot and rollout on top; the
# BMC layer knows only core (it takes endpoints, never inventory hosts); the lab drives BMCs only;
# runs (ids and records of bake, nightly and reimage runs) knows core and state; install (disk layout,
# A/B slots, boot entries: pure) sits beside image, below the inventory that names its settings and the boot
# server that hands its plans out. Each entry is an
# import that exists (test_allowed_holds_only_imports_that_exist): widen it when you add one.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "image": {"core"},
    "install": {"core", "image"},
    "state": {"core"},
    "runs": {"core", "state"},
    "trust": {"core", "image"},
    "store": {"core", "image", "state", "trust"},
    "bake": {"core", "image", "store", "runs", "trust"},
    "bmc": {"core"},
    "inventory": {"core", "image", "bmc", "install"},
    "fleet": {"core", "image", "state", "store", "inventory", "bmc", "install"},
    "boot": {"core", "image", "state", "store", "inventory", "fleet", "trust", "install"},
    "rollout": {"core", "image", "state", "store", "inventory", "fleet", "bmc", "runs", "install"},
    "lab": {"core", "bmc", "trust"},
    "role": {"core", "bake"},
    "nightly": {"core", "image", "state", "store", "bake", "lab", "rollout", "fleet", "runs"},
    "access": {"core", "state", "fleet"},
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


SQL = re.compile(r"\.execute\(|\bSELECT\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|\bDELETE FROM\b")


def test_sql_only_in_the_state_package() -> None:
    offenders = [str(p.relative_to(TOOLKIT)) for p in TOOLKIT.rglob("*.py")
                 if _package(p) != "state" and SQL.search(p.read_text())]
    assert offenders == []


def test_allowed_holds_only_imports_that_exist() -> None:
    used: dict[str, set[str]] = {pkg: set() for pkg in ALLOWED}
    for path in SOURCES:
        used.setdefault(_package(path), set()).update(_imports(path) - {_package(path)})
    unused = {pkg: sorted(ALLOWED[pkg] - used[pkg]) for pkg in ALLOWED if ALLOWED[pkg] - used[pkg]}
    assert unused == {}, "ALLOWED permits imports nobody makes: narrow it"


# What starts a process: only toolkit/core may (core/run.py: run, spawn, run_threaded; core/forks.py).
PROCESS_START = re.compile(
    r"^\s*(?:import|from)\s+(?:subprocess|multiprocessing|pty|concurrent\.futures\.process)\b"
    r"|\bProcessPoolExecutor\b|\bos\.(?:fork|forkpty|exec\w*|spawn\w*|posix_spawn\w*|system|popen)\s*\("
    r"|\bcreate_subprocess_(?:exec|shell)\b",
    re.MULTILINE,
)


def test_only_core_starts_processes() -> None:
    offenders = [str(p.relative_to(TOOLKIT)) for p in TOOLKIT.rglob("*.py")
                 if _package(p) != "core" and PROCESS_START.search(p.read_text())]
    assert offenders == []


def test_no_loose_modules() -> None:
    top = sorted(p.name for p in TOOLKIT.iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert {"bake", "store", "boot", "bmc", "rollout", "fleet", "lab", "state", "inventory", "image",
            "core", "cli", "runs"} <= set(top)
    loose = sorted(p.name for p in TOOLKIT.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"{loose}: every module lives in a package (a room); move it into one"


@pytest.mark.parametrize(("text", "rule"), [
    ("import subprocess\n", "process"),
    ("from multiprocessing import Process\n", "process"),
    ("    pid = os.fork()\n", "process"),
    ("os.execvp('x', ['x'])\n", "process"),
    ("os.posix_spawn(p, a, e)\n", "process"),
    ("from concurrent.futures import ProcessPoolExecutor\n", "process"),
    ("await asyncio.create_subprocess_exec('x')\n", "process"),
    ("cur.execute('SELECT 1')\n", "sql"),
    ("q = 'DELETE FROM hosts'\n", "sql"),
])
def test_the_rules_see_what_they_forbid(text: str, rule: str) -> None:
    """The searches above are only as good as their patterns: each forbidden form is found."""
    assert (PROCESS_START if rule == "process" else SQL).search(text)


def test_the_rules_let_ordinary_code_through() -> None:
    for text in ("os._exit(code)\n", "from toolkit.core.run import spawn\n", "execute_plan(plan)\n",
                 "'update the host'\n"):
        assert not PROCESS_START.search(text) and not SQL.search(text), text
