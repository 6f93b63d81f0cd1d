"""`golden role test` for every role: lint, then molecule test (converge, idempotence, verify) in a
throwaway copy of the cached debootstrapped chroot.

The chroot comes from the same cache the fixtures use (toolkit/role/chroot.py); Molecule's own
create/destroy playbooks copy and remove it, and `golden role test` removes whatever a failed run
left behind. No GOLDEN_* variable is needed.
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
from toolkit.image.spec import role_needs_running_system

# A role that needs a running system cannot converge in a chroot: the packer bake of the image that
# uses it is its test (tests/integration/test_bake_packer.py).
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir()
               if (p / "tasks" / "main.yml").exists() and not role_needs_running_system(p))

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def test_every_role_has_a_scenario() -> None:
    missing = [r for r in ROLES if not (ROOT / "molecule" / r / "molecule.yml").exists()]
    assert not missing, f"roles without a molecule scenario: {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_molecule(role: str, golden_chroot: Path, tmp_path: Path) -> None:
    env = {k: os.environ[k] for k in ("HOME", "PATH", "LANG", "GOLDEN_TEST_CACHE") if k in os.environ}
    log = tmp_path / "role-test.log"
    started = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run([str(Path(sys.executable).with_name("golden")), "role", "test", role], cwd=ROOT,
                            env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    print(f"golden role test {role}: {time.monotonic() - started:.1f} s (rc {rc})")
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))  # molecule colours even a file
    assert rc == 0, f"golden role test {role} failed; last lines:\n" + "\n".join(text.splitlines()[-60:])
    # The sequence really ran: idempotence is a separate step that fails on any change.
    assert re.search(rf"{role} \W+ idempotence: Executed: Successful", text)
