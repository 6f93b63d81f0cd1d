"""The role developer's loop on a fresh role: golden role new, then golden role test, and plain
``molecule test -s NAME``, with no environment set up by the test (the scenario's create step finds
or builds the cached chroot itself). Also: the shipped roles are lint-clean.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.common import ROOT
from toolkit.core.run import run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

VENV_BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _env() -> dict[str, str]:
    # Only what any shell has, plus the machine's test cache when the suite moved it: no GOLDEN_*
    # chroot variables, no venv on PATH (golden finds its tools itself).
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    if "GOLDEN_TEST_CACHE" in os.environ:
        env["GOLDEN_TEST_CACHE"] = os.environ["GOLDEN_TEST_CACHE"]
    return env


def _golden(args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    started = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run([str(VENV_BIN / "golden"), *args], cwd=cwd, env=env or _env(), stdout=out,
                            stderr=subprocess.STDOUT, check=False).returncode
    print(f"golden {' '.join(args)}: {time.monotonic() - started:.1f} s (rc {rc})")
    return rc, log.read_text(errors="replace")


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project as git sees it (tracked and untracked, not ignored)."""
    # A name of its own: plain molecule keeps its ephemeral folder (and our chroot copy) per basename.
    dest = tmp_path_factory.mktemp("project") / f"golden-{os.getpid()}"
    dest.mkdir()
    files = run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture=True).stdout.split()
    run(["tar", "-cf", str(dest.parent / "p.tar"), *files], cwd=ROOT, capture=True)
    run(["tar", "-xf", str(dest.parent / "p.tar"), "-C", str(dest)], capture=True)
    return dest


def test_shipped_roles_are_lint_clean(tmp_path: Path) -> None:
    rc, out = _golden(["role", "lint"], ROOT, tmp_path / "lint.log")
    assert rc == 0, out[-4000:]
    prefix = "ok: yamllint, ansible-lint clean on "
    checked = [line.removeprefix(prefix).split(", ") for line in out.splitlines() if line.startswith(prefix)]
    shipped = {f"{kind}/{p.name}" for kind in ("roles", "molecule") for p in (ROOT / kind).iterdir() if p.is_dir()}
    assert len(checked) == 1 and set(checked[0]) == shipped, (checked, sorted(shipped))


def test_new_role_passes_golden_role_test(project_copy: Path, tmp_path: Path) -> None:
    rc, out = _golden(["role", "new", "fresh_role"], project_copy, tmp_path / "new.log")
    assert rc == 0, out
    rc, out = _golden(["role", "test", "fresh_role"], project_copy, tmp_path / "test.log")
    out = ANSI.sub("", out)
    assert rc == 0, out[-6000:]
    assert re.search(r"fresh_role \W+ idempotence: Executed: Successful", out)
    assert "ok: role fresh_role passed lint and molecule test" in out


def test_plain_molecule_test_needs_no_environment(project_copy: Path, tmp_path: Path) -> None:
    if not (project_copy / "roles" / "fresh_role").is_dir():
        run([str(VENV_BIN / "golden"), "role", "new", "fresh_role"], cwd=project_copy, capture=True)
    # As a developer types it after `. .venv/bin/activate`: the venv on PATH and nothing else.
    env = _env() | {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}
    log = tmp_path / "molecule.log"
    result = run(["molecule", "test", "-s", "fresh_role"], env=env, cwd=project_copy, check=False, log_path=log)
    text = ANSI.sub("", log.read_text(errors="replace"))  # molecule colours its output even into a file
    assert result.returncode == 0, text[-6000:]
    # Molecule draws the arrow as ">" or "\u279c" depending on the terminal it thinks it has.
    assert re.search(r"fresh_role \W+ verify: Executed: Successful", text), text[-3000:]
