"""golden nightly's lock and its systemd units, for real: a second nightly while another process holds
the lock is refused at once (exit 1) naming the holder; the rendered service and timer pass
``systemd-analyze verify``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.boot import GOLDEN, golden_env
from tests.fixtures.common import ROOT
from toolkit.core.run import require, run

pytestmark = pytest.mark.integration

HOLDER = """
import sys, time
from pathlib import Path
from toolkit.nightly.lock import nightly_lock
with nightly_lock(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


def _nightly(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GOLDEN, "--home", str(home), "nightly", *args], capture_output=True, text=True,
                          env={**golden_env(), "PATH": "/usr/bin:/bin"}, timeout=60, cwd=ROOT)


def test_second_nightly_is_refused_naming_the_running_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(home / "locks"), "20261202T020000Z-nightly-0a0b0c"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        out = _nightly(home, "--images", "base")
        assert time.monotonic() - started < 30  # refused at once, not after waiting for the lock
        assert out.returncode == 1, out
        assert "another golden nightly is running: run 20261202T020000Z-nightly-0a0b0c" in out.stderr
        assert f"pid {holder.pid}" in out.stderr and "Traceback" not in out.stderr
        assert not (home / "runs").exists()  # the refused one left no run record
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the next nightly gets past it (and stops at the bad name).
    out = _nightly(home, "--images", "no-such-image")
    assert out.returncode == 2 and "no image spec 'no-such-image'" in out.stderr, out


def test_install_timer_writes_units_systemd_accepts(tmp_path: Path) -> None:
    require("systemd-analyze", "systemd")
    units = tmp_path / "units"
    inv = tmp_path / "inventory.yaml"
    inv.write_text("all: {}\n")
    res = run([GOLDEN, "--home", str(tmp_path / "home"), "nightly", "--install-timer", "--at", "03:30",
               "--unit-dir", str(units), "--promote-to", "staging", "-i", str(inv)], capture=True, env=golden_env())
    assert "golden-nightly.timer" in res.stdout
    service = (units / "golden-nightly.service").read_text()
    timer = (units / "golden-nightly.timer").read_text()
    assert "OnCalendar=*-*-* 03:30:00" in timer and "Persistent=true" in timer
    exec_start = next(ln for ln in service.splitlines() if ln.startswith("ExecStart="))
    assert exec_start.endswith(f"nightly --promote-to staging -i {inv}")
    assert f"--home {tmp_path / 'home'}" in exec_start and "Type=oneshot" in service
    assert "locks/nightly.lock" in service
    for unit in ("golden-nightly.service", "golden-nightly.timer"):
        verify = run(["systemd-analyze", "verify", str(units / unit)], capture=True, check=False)
        assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
