"""`molecule test` for every role: converge, idempotence and verify in a debootstrapped chroot.

Each scenario gets a throwaway copy of the cached chroot (tests/fixtures/chroot.py); molecule's
own create/destroy playbooks copy and remove it, and this test unmounts and removes whatever a
failed run left behind.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.chroot import remove_tree
from tests.fixtures.common import ROOT
from toolkit.core.run import run

ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").exists())

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def test_every_role_has_a_scenario() -> None:
    missing = [r for r in ROLES if not (ROOT / "molecule" / r / "molecule.yml").exists()]
    assert not missing, f"roles without a molecule scenario: {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_molecule(role: str, golden_chroot: Path, tmp_path: Path) -> None:
    copy = tmp_path / "chroot"
    venv_bin = str(Path(sys.executable).parent)
    env = {
        # molecule runs ansible-playbook and ansible-config from the same venv.
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "GOLDEN_CHROOT_BASE": str(golden_chroot),
        "GOLDEN_MOLECULE_CHROOT": str(copy),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
    }
    log = tmp_path / "molecule.log"
    started = time.monotonic()
    try:
        result = run([f"{venv_bin}/molecule", "test", "-s", role], env=env, cwd=ROOT, check=False, log_path=log)
    finally:
        remove_tree(copy)
    elapsed = time.monotonic() - started
    print(f"molecule test -s {role}: {elapsed:.1f} s (rc {result.returncode})")
    text = log.read_text(errors="replace")
    assert result.returncode == 0, f"molecule test -s {role} failed; last lines:\n" + "\n".join(text.splitlines()[-60:])
    # The sequence really ran: idempotence is a separate step that fails on any change.
    assert "idempotence" in text.lower()
