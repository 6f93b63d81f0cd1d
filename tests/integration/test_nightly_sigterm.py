"""One SIGTERM stops a whole nightly: exit 130, the usual 'interrupted' line, and no later image baked.

The cheapest real setup: the real ``golden nightly`` process over a project with two image specs,
whose ``disk-image-create`` (taken from beside the Python that runs golden, as a bake does) is a
stand-in that records each start and sleeps. The signal goes to the whole process group, as
``systemctl stop`` sends it to the whole unit, so the stand-in dies of it too (the case where the
current gate used to fail and the nightly went on to the next image).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.common import ROOT

pytestmark = pytest.mark.integration

FAKE_DIB = """#!/bin/sh
echo "$*" >> "{marks}"
exec sleep 120
"""

SPEC = "name: {name}\nbase: {{distro: debian, release: bookworm}}\noutputs: [netboot]\n"


def _python_beside_fake_dib(tmp: Path, marks: Path) -> Path:
    """A venv-shaped folder whose bin/ holds our python and the stand-in disk-image-create."""
    venv = Path(sys.prefix)
    (tmp / "bin").mkdir(parents=True)
    shutil.copy(venv / "pyvenv.cfg", tmp / "pyvenv.cfg")
    (tmp / "lib").symlink_to(venv / "lib")  # the venv's site-packages, with golden's editable install
    (tmp / "bin" / "python3").symlink_to(os.path.realpath(sys.executable))
    dib = tmp / "bin" / "disk-image-create"
    dib.write_text(FAKE_DIB.format(marks=marks))  # a bake passes DIB a minimal environment: no marks path there
    dib.chmod(0o755)
    return tmp / "bin" / "python3"


def test_sigterm_in_the_first_bake_stops_the_whole_nightly(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "images").mkdir(parents=True)
    (project / "roles").mkdir()
    for name in ("alpha", "beta"):
        (project / "images" / f"{name}.yaml").write_text(SPEC.format(name=name))
    marks = tmp_path / "dib-starts"
    python = _python_beside_fake_dib(tmp_path / "py", marks)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOLDEN_")}
    env.update(GOLDEN_HOME=str(tmp_path / "home"), GOLDEN_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([str(python), "-m", "toolkit.cli", "nightly", "--promote-to", "none"], cwd=project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marks.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert marks.exists(), proc.communicate(timeout=30)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (out, err)
    assert "nightly interrupted" in err and "Traceback" not in err, err
    starts = marks.read_text().splitlines()
    assert len(starts) == 1, starts  # beta's bake never started
    assert "alpha" in starts[0]
    assert "beta: " not in err  # no stage of the second image ran
