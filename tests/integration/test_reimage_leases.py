"""Two controllers, one fleet: a second reimage over the hosts of a running one is refused, on both backends.

Real processes end to end: simulated lab machines behind virtual BMCs, a real ``golden serve``, and
two ``golden reimage`` commands sharing the state database (SQLite, then PostgreSQL).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build, start_golden_serve
from tests.fixtures.common import free_port
from tests.fixtures.lab import GoldenRunner
from toolkit.state.db import SQLiteStateDB
from toolkit.state.postgres import PostgresStateDB
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BUILD = "1ea5e00000000001"
GOLDEN = str(Path(sys.executable).parent / "golden")


def _wait_for_run(golden: GoldenRunner, first: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = golden.json("runs", "--kind", "reimage")
        if runs:
            return str(runs[0]["id"])
        assert first.poll() is None, first.communicate()
        time.sleep(0.2)
    raise AssertionError("the first reimage never started")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_second_run_over_leased_hosts_is_refused(tmp_path: Path, request, backend: str) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    extra = {"GOLDEN_STATE_URL": url} if url else {}
    home = tmp_path / "home"
    golden = GoldenRunner(home=home, extra_env=extra)
    make_build(Store(home / "store"), "web", BUILD)
    port = free_port()
    golden.json("lab", "up", "--nodes", "3", "--no-vm", "--boot-url", f"http://127.0.0.1:{port}")
    inventory = home / "lab" / "inventory.yaml"
    serve = start_golden_serve(home, inventory, tmp_path / "serve.log", listen=f"127.0.0.1:{port}", env=extra)
    try:
        # The contest window holds every wave open a few seconds: time for the second controller to try.
        first = subprocess.Popen([GOLDEN, "--json", "reimage", "lab", "--image", f"web@{BUILD}", "--canary", "1",
                                  "--wave-size", "1", "--contest-window", "4", "--boot-timeout", "60", "--yes",
                                  "-i", str(inventory)], env=golden.env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        run_id = _wait_for_run(golden, first)
        second = golden.run("reimage", "lab", "--image", f"web@{BUILD}", "--yes", "-i", str(inventory), check=False)
        assert second.returncode == 1, second.stderr
        assert f"leased by reimage run {run_id}" in second.stderr and "Traceback" not in second.stderr
        out, err = first.communicate(timeout=180)
        assert first.returncode == 0, err[-2000:]
        assert set(json.loads(out)["results"].values()) == {"done"}
        assert [r["id"] for r in golden.json("runs", "--kind", "reimage")] == [run_id]  # the refusal left no run
        db = PostgresStateDB(url) if url else SQLiteStateDB(home / "state.db")
        with db.read() as repo:
            assert repo.get_leases(sorted(json.loads(out)["results"])) == []  # released at the end
        db.close()
    finally:
        serve.stop()
        golden.run("lab", "down", check=False)
