"""Reimage 1,000 simulated lab machines through real IPMI and a real `golden serve`.

Each --no-vm BMC's machine netboots on power on: it fetches its iPXE script from golden serve,
the first MiB of the kernel, initrd and squashfs the script names, and posts the agent report
with the token it was given. The run must finish with its waves and failure budget respected.
Timing lives in bench/reimage_scale.py; this test asserts behaviour within a generous bound.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build, start_golden_serve
from tests.fixtures.common import free_port
from tests.fixtures.lab import GoldenRunner
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NODES = 1000
BUILD = "5ca1e00000000001"



def test_reimage_1000_simulated_hosts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    golden = GoldenRunner(home=home)
    make_build(Store(home / "store"), "web", BUILD, sizes={"vmlinuz": 2 << 20, "initrd": 3 << 20,
                                                          "rootfs.squashfs": 4 << 20})
    port = free_port()
    golden.json("lab", "up", "--nodes", str(NODES), "--no-vm", "--boot-url", f"http://127.0.0.1:{port}")
    inventory = home / "lab" / "inventory.yaml"
    serve = start_golden_serve(home, inventory, tmp_path / "serve.log", listen=f"127.0.0.1:{port}")
    try:
        started = time.monotonic()
        out = golden.run("--json", "reimage", "lab", "--image", f"web@{BUILD}", "--canary", "10",
                         "--wave-size", "25%", "--max-failures", "1%", "--boot-timeout", "120",
                         "--contest-window", "2", "--yes", "-i", str(inventory), timeout=800, check=False)
        wall = time.monotonic() - started
        result = json.loads(out.stdout)
        assert out.returncode == 0, (result, out.stderr[-2000:])
        assert len(result["results"]) == NODES and set(result["results"].values()) == {"done"}
        assert result["failures"] <= result["budget"] == 10
        run = golden.json("runs", "show", result["run_id"])
        plan = run["run"]["plan"]["plan"]
        assert [len(w["hosts"]) for w in plan["waves"]] == [10, 250, 250, 250, 240]
        # Waves are sequential: no host of wave N+1 is touched before every host of wave N finished.
        finished_at: dict[int, float] = {}
        first_touch: dict[int, float] = {}
        for s in run["steps"]:
            w = s["wave"]
            first_touch[w] = min(first_touch.get(w, s["at"]), s["at"])
            if s["step"] == "host":
                finished_at[w] = max(finished_at.get(w, 0.0), s["at"])
        for w in range(1, len(plan["waves"])):
            assert first_touch[w] >= finished_at[w - 1]
        # Every host booted once through the boot server and reported the build.
        fleet = golden.json("fleet", "lab", "-i", str(inventory))
        assert len(fleet) == NODES and {h["observed"] for h in fleet} == {BUILD}
        print(f"reimaged {NODES} simulated hosts in {wall:.1f} s")
    finally:
        serve.stop()
        golden.run("lab", "down", check=False)
