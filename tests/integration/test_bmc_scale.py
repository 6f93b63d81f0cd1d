"""500 simulated BMCs on loopback answer `golden power all status`, also with 5% of replies dropped."""

from __future__ import annotations

import time

import pytest

from tests.fixtures.lab import GoldenRunner

pytestmark = pytest.mark.integration

NODES = 500


def _status_all(golden: GoldenRunner) -> tuple[dict, float]:
    started = time.monotonic()
    report = golden.json("power", "all", "status", "--workers", "32", timeout=300)
    return report, time.monotonic() - started


@pytest.mark.timeout(600)
def test_500_bmcs_all_answer(golden: GoldenRunner) -> None:
    golden.run("lab", "up", "--nodes", str(NODES), "--no-vm")
    report, seconds = _status_all(golden)
    assert len(report["results"]) == NODES
    assert all(r["ok"] and r["power"] == "off" for r in report["results"]), report["results"][:3]
    assert seconds < 60
    golden.run("power", "lab-rack1", "on")  # a write, then the read shows it
    report, _ = _status_all(golden)
    on = {r["host"] for r in report["results"] if r["power"] == "on"}
    assert len(on) == 16 and all(h.startswith("lab-n") for h in on)


@pytest.mark.timeout(600)
def test_500_bmcs_with_dropped_replies(golden: GoldenRunner) -> None:
    golden.run("lab", "up", "--nodes", str(NODES), "--no-vm", "--drop-rate", "0.05", "--seed", "42")
    report, seconds = _status_all(golden)
    assert len(report["results"]) == NODES
    failed = [r for r in report["results"] if not r["ok"]]
    assert not failed, failed[:3]
    assert seconds < 180
