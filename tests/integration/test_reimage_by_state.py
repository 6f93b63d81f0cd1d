"""Act on state: a break-glass grant taints one host of a simulated rack (real IPMI, a real `golden serve`);
``golden reimage lab --state tainted --yes`` reimages exactly that host, and its boot clears the taint."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build, start_golden_serve
from tests.fixtures.common import free_port
from tests.fixtures.lab import GoldenRunner
from toolkit.core.run import run
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

GOOD = "900d000000000015"
FAST = ["--canary", "0", "--wave-size", "3", "--contest-window", "0.5", "--boot-timeout", "30", "--yes"]


def states(golden: GoldenRunner, inventory: Path) -> dict[str, tuple[str, str | None]]:
    return {h["name"]: (h["state"], h["taint"]) for h in golden.json("fleet", "lab", "-i", str(inventory))}


def test_reimage_state_tainted_reimages_exactly_the_tainted_host(tmp_path: Path) -> None:
    home = tmp_path / "home"
    golden = GoldenRunner(home=home)
    make_build(Store(home / "store"), "web", GOOD)
    port = free_port()
    golden.json("lab", "up", "--nodes", "3", "--no-vm", "--boot-url", f"http://127.0.0.1:{port}", "--boot-time", "0")
    inventory = home / "lab" / "inventory.yaml"
    serve = start_golden_serve(home, inventory, tmp_path / "serve.log", listen=f"127.0.0.1:{port}")
    try:
        first = golden.json("reimage", "lab", "--image", f"web@{GOOD}", *FAST, "-i", str(inventory))
        assert first["status"] == "succeeded", first
        names = sorted(states(golden, inventory))
        assert {s for s, _ in states(golden, inventory).values()} == {"in-sync"}

        key = tmp_path / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], capture=True)
        victim = names[1]
        golden.json("break-glass", victim, "--reason", "INC-15: look at the disk", "--ttl", "10m",
                    "--pubkey", f"{key}.pub", "-i", str(inventory))
        before = states(golden, inventory)
        assert before[victim][0] == "tainted" and before[victim][1].endswith("INC-15: look at the disk")
        assert [n for n, (s, _) in before.items() if s != "in-sync"] == [victim]

        plan = golden.json("reimage", "lab", "--state", "tainted", "--image", f"web@{GOOD}", "--dry-run",
                           "-i", str(inventory))["plan"]
        assert [h for w in plan["waves"] for h in w["hosts"]] == [victim]
        done = golden.json("reimage", "lab", "--state", "tainted", "--image", f"web@{GOOD}", *FAST,
                           "-i", str(inventory))
        assert done["status"] == "succeeded" and sorted(done["results"]) == [victim], done
        assert states(golden, inventory) == {n: ("in-sync", None) for n in names}
        assert golden.run("reimage", "lab", "--state", "tainted", "--yes", "-i", str(inventory),
                          check=False).returncode == 2  # nobody is tainted any more
        db = sqlite3.connect(home / "state.db")
        audit = db.execute("SELECT action, subject FROM audit_log ORDER BY id").fetchall()
        pattern = db.execute("SELECT pattern FROM reimage_runs WHERE id = ?", (done["run_id"],)).fetchone()
        db.close()
        assert audit == [("break-glass", victim), ("untaint", victim)] and pattern == ("lab --state tainted",)
    finally:
        serve.stop()
        golden.run("lab", "down", check=False)
