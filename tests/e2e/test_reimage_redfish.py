"""Reimage a QEMU lab machine over Redfish with TLS verified against the lab's CA, and refuse a BMC
whose certificate is not from the CA the inventory names.

One lab, one machine, shared by both checks: ``golden lab up --redfish`` serves the machine's BMC
over HTTPS (a certificate from the lab CA; the inventory names the CA in ``bmc_ca_file``). First
the wrong CA (a copy of the inventory naming another one): the run fails that host with the
certificate error and the BMC's record of power actions stays empty, the machine never started (no
boot needed). Then the lab's own inventory: the machine netboots the base image and reports in sync.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.bake import bake_home, bake_image
from tests.fixtures.boot import start_golden_serve
from tests.fixtures.common import free_port
from tests.fixtures.lab import GoldenRunner
from toolkit.lab.tlsca import BmcCa

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]


def _node(golden: GoldenRunner) -> dict:
    nodes = golden.json("lab", "status")["nodes"]
    assert len(nodes) == 1
    return nodes[0]


def test_reimage_over_redfish_with_the_lab_ca_and_not_with_another(tmp_path: Path) -> None:
    base = bake_image("base")
    home = tmp_path / "home"
    home.mkdir()
    (home / "store").symlink_to(bake_home() / "store")
    golden = GoldenRunner(home=home)
    port = free_port()
    golden.json("lab", "up", "--nodes", "1", "--redfish", "--boot-url", f"http://10.0.2.2:{port}", "--memory", "2048")
    inventory = home / "lab" / "inventory.yaml"
    lab_ca = home / "lab" / "tls" / "ca.pem"
    serve = start_golden_serve(home, inventory, tmp_path / "serve.log", listen=f"127.0.0.1:{port}")
    try:
        text = inventory.read_text()
        assert "bmc_protocol: redfish" in text and f"bmc_ca_file: {lab_ca}" in text
        name = _node(golden)["name"]

        # another CA: that host fails with the certificate error; its BMC carried out nothing
        other = BmcCa.create(tmp_path / "other-ca.pem", "not the lab's CA").pem
        wrong = tmp_path / "wrong-ca.yaml"
        wrong.write_text(text.replace(str(lab_ca), str(other)))
        wrong.chmod(0o600)
        failed = golden.run("--json", "reimage", "lab", "--image", f"base@{base.build_id}", "--canary", "0",
                            "--boot-timeout", "900", "--yes", "-i", str(wrong), check=False)
        outcome = json.loads(failed.stdout)
        assert failed.returncode == 1 and outcome["results"] == {name: "failed"}, (outcome, failed.stderr[-2000:])
        steps = golden.json("runs", "show", outcome["run_id"])["steps"]
        refusals = [s["detail"] for s in steps if s["phase"] == "failed"]
        assert refusals and all(d.startswith(f"{name}: BMC 127.0.0.1:") and "presented a TLS certificate that is "
                                f"not trusted (not issued by {other} for 127.0.0.1" in d for d in refusals), refusals
        assert not [s for s in steps if s["step"] == "power-cycle"]
        node = _node(golden)
        assert (node["power"], node["pid"], node["power_actions"]) == ("off", None, [])

        # the lab's CA: verified, cycled once, netbooted, reported
        done = golden.json("reimage", "lab", "--image", f"base@{base.build_id}", "--canary", "0",
                           "--boot-timeout", "900", "--yes", "-i", str(inventory), timeout=1500)
        assert done["status"] == "succeeded" and done["results"] == {name: "done"}, done
        fleet = golden.json("fleet", "lab", "-i", str(inventory))
        assert [(h["name"], h["observed"], h["state"]) for h in fleet] == [(name, base.build_id, "in-sync")]
        node = _node(golden)
        assert node["power"] == "on" and node["power_actions"] == ["On"], node
        assert node["overrides"][-1] == "network once legacy"
    finally:
        serve.stop()
        golden.run("lab", "down", check=False)
