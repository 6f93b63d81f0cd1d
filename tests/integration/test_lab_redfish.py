"""The lab's Redfish BMCs (``golden lab up --redfish --no-vm``) under the real CLI, in seconds: the
simulated machines are reimaged over HTTPS verified against the lab CA; with another CA every host
fails with the certificate error and no BMC carries out a power action; ``bmc_verify: false`` is
one warning for the run. tests/e2e/test_reimage_redfish.py does the same with a QEMU machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build, start_golden_serve
from tests.fixtures.common import free_port
from tests.fixtures.lab import GoldenRunner
from toolkit.lab.tlsca import BmcCa
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BUILD = "5ca1e0000000f15f"
NODES = 3


def _actions(golden: GoldenRunner) -> dict[str, list[str]]:
    return {n["name"]: n["power_actions"] for n in golden.json("lab", "status")["nodes"]}


def _variant(inventory: Path, path: Path, old: str, new: str) -> Path:
    path.write_text(inventory.read_text().replace(old, new))
    path.chmod(0o600)
    return path


def test_a_redfish_lab_is_verified_against_its_ca(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_build(Store(store), "web", BUILD)
    golden = GoldenRunner(home=tmp_path / "home", extra_env={"GOLDEN_STORE": str(store)})
    port = free_port()
    golden.json("lab", "up", "--nodes", str(NODES), "--no-vm", "--redfish", "--boot-url", f"http://127.0.0.1:{port}",
                "--boot-time", "1")
    inventory = golden.home / "lab" / "inventory.yaml"
    lab_ca = str(golden.home / "lab" / "tls" / "ca.pem")
    serve = start_golden_serve(golden.home, inventory, tmp_path / "serve.log", listen=f"127.0.0.1:{port}",
                               env={"GOLDEN_STORE": str(store)})
    reimage = ("--json", "reimage", "lab", "--image", f"web@{BUILD}", "--canary", "0", "--wave-size", str(NODES),
               "--boot-timeout", "60", "--contest-window", "1", "--yes", "-i")
    try:
        names = sorted(_actions(golden))
        # another CA: every host fails on its certificate, and no BMC did anything
        other = BmcCa.create(tmp_path / "other.pem").pem
        wrong = _variant(inventory, tmp_path / "wrong.yaml", lab_ca, str(other))
        failed = golden.run(*reimage, str(wrong), check=False)
        outcome = json.loads(failed.stdout)
        assert failed.returncode == 1 and outcome["results"] == dict.fromkeys(names, "failed"), failed.stderr[-2000:]
        steps = golden.json("runs", "show", outcome["run_id"])["steps"]
        refused = {s["host"] for s in steps if s["phase"] == "failed" and "presented a TLS certificate that is not "
                   f"trusted (not issued by {tmp_path / 'other.pem'} for 127.0.0.1" in s["detail"]}
        assert refused == set(names)
        assert not [s for s in steps if s["step"] == "power-cycle"]
        assert _actions(golden) == {n: [] for n in names}

        # its own CA: verified, each machine switched on once, netbooted, reported
        done = golden.json(*reimage, str(inventory), timeout=200)
        assert done["status"] == "succeeded" and done["results"] == dict.fromkeys(names, "done"), done
        fleet = golden.json("fleet", "lab", "-i", str(inventory))
        assert [(h["name"], h["observed"], h["state"]) for h in fleet] == [(n, BUILD, "in-sync") for n in names]
        assert _actions(golden) == {n: ["On"] for n in names}

        # bmc_verify: false works, and says so once for the run, naming the hosts
        loose = _variant(inventory, tmp_path / "loose.yaml", f"bmc_ca_file: {lab_ca}", "bmc_verify: false")
        status = golden.run("power", "lab", "status", "-i", str(loose))
        warnings = [line for line in status.stderr.splitlines() if "not verifying" in line]
        assert warnings == [f"WARNING golden.bmc: not verifying the TLS certificate of {NODES} Redfish BMC(s) "
                            f"(bmc_verify: false): {', '.join(names)}"], status.stderr
        assert _actions(golden) == {n: ["On"] for n in names}  # reading status changes nothing
    finally:
        serve.stop()
        golden.run("lab", "down", check=False)
