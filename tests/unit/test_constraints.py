"""constraints.txt pins the whole dependency set, and this venv (made by scripts/bootstrap) is exactly it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[_norm(name)] = version.strip()
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_declared_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {_norm(re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0]) for d in declared}
    assert names - set(_pins()) == set()


def test_this_venv_is_the_pinned_set() -> None:
    pins = _pins()
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed.pop("golden", None)
    for tool in ("pip", "setuptools", "wheel"):  # the venv's own, not golden's dependencies
        installed.pop(tool, None)
    drift = {n: (v, pins.get(n)) for n, v in installed.items() if pins.get(n) != v}
    assert drift == {}, "installed (version, pinned) differ; run scripts/bootstrap or scripts/constraints"
