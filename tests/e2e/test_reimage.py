"""Reimage a 3-node QEMU lab rack for real: kill and resume, canary waves A -> B, a failing build C.

Three real builds: A is images/base.yaml (the shared baked fixture), B and C are two versions of
a web image, ``rollout``, baked into the shared test store. B serves a page its health check
accepts; C moves nginx to another port, so its health check fails on the node and the canary
must be rolled back to B with no other host touched. The machines netboot through iPXE from
`golden serve`; BMCs are the lab's virtual IPMI BMCs; the controller is the `golden` CLI.

The same boots check hardware facts: every machine has an SMBIOS serial and two disks, and after
its first boot ``golden hw`` shows them; then lab-n03 loses memory and gains an NVMe disk while it
runs, and the reimage to B (its next boot) raises hw-changed naming exactly those two changes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.bake import bake_cached_project, bake_home, bake_image
from tests.fixtures.boot import ServeProcess, start_golden_serve
from tests.fixtures.common import ROOT, free_port
from tests.fixtures.lab import GoldenRunner
from toolkit.lab.hardware import load_hardware, set_machine_hardware
from toolkit.store.artifacts import Build

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

SPEC = """\
name: rollout
description: release {rel} of a small web tier (reimage e2e)
base:
  distro: debian
  release: bookworm
packages: [openssh-server, ca-certificates, iproute2]
roles:
  - name: netboot
  - name: hardening
  - name: golden_agent
    vars:
      golden_agent_checks_settle_s: 30
      golden_agent_interval_s: 0
  - name: web
    vars:
      web_port: {port}
      web_message: "rollout release {rel}"
checks:
  - name: nginx-enabled
    unit_enabled: nginx.service
  - name: http-ok
    http:
      port: 80
      path: /
      expect_body: rollout release
"""


def bake_release(rel: str, port: int) -> Build:
    """Bake one version of images/rollout.yaml into the shared test store (cached by its inputs)."""
    return bake_cached_project(f"rollout-project-{rel}", "rollout", SPEC.format(rel=rel, port=port))


@pytest.fixture(scope="module")
def releases() -> dict[str, Build]:
    return {"A": bake_image("base"), "B": bake_release("B", 80), "C": bake_release("C", 8081)}



@pytest.fixture
def rack(tmp_path: Path, releases: dict[str, Build]) -> Iterator[tuple[GoldenRunner, ServeProcess, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "store").symlink_to(bake_home() / "store")  # the baked releases; this test never deletes builds
    golden = GoldenRunner(home=home)
    port = free_port()
    golden.json("lab", "up", "--nodes", "3", "--boot-url", f"http://10.0.2.2:{port}", "--memory", "2048",
                "--disks", "2")
    inventory = home / "lab" / "inventory.yaml"
    serve = start_golden_serve(home, inventory, tmp_path / "serve.log", listen=f"127.0.0.1:{port}")
    try:
        yield golden, serve, inventory
    finally:
        serve.stop()
        golden.run("lab", "down", check=False)


def _reimage_argv(golden: GoldenRunner, *args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "golden"), "--json", "reimage", *args]


def _fleet(golden: GoldenRunner, inventory: Path) -> dict[str, dict]:
    return {h["name"]: h for h in golden.json("fleet", "lab", "-i", str(inventory))}


def _power_intents(golden: GoldenRunner, run_id: str) -> dict[tuple[str, int], int]:
    steps = golden.json("runs", "show", run_id)["steps"]
    counts: dict[tuple[str, int], int] = {}
    for s in steps:
        if s["step"] == "power-cycle" and s["phase"] == "intent":
            counts[(s["host"], s["attempt"])] = counts.get((s["host"], s["attempt"]), 0) + 1
    return counts


def _hardware_as_built(golden: GoldenRunner, inventory: Path) -> None:
    """After one boot each machine's facts are its lab hardware: SMBIOS serial, CPU, memory, both disks."""
    seen = {h["host"]: h for h in golden.json("hw", "lab", "-i", str(inventory))}
    assert sorted(seen) == ["lab-n01", "lab-n02", "lab-n03"]
    for name, h in seen.items():
        hw = load_hardware(golden.home / "lab" / "nodes" / name)
        assert hw is not None and h["hw_changed"] == []
        facts = h["facts"]
        assert facts["system"] == {"vendor": "golden", "model": "lab machine", "serial": hw.serial}, facts
        assert (facts["cpu"]["threads"], facts["memory_mib"]) == (1, 2048), facts
        assert [(d["name"], d["serial"], d["size_bytes"]) for d in facts["disks"]] == [
            ("vda", hw.disks[0].serial, 8 << 30), ("vdb", hw.disks[1].serial, 1 << 30)], facts


def _hardware_changed(golden: GoldenRunner, inventory: Path) -> None:
    """lab-n03 came back with less memory and a third disk: hw-changed names both; the others are unchanged."""
    hw = load_hardware(golden.home / "lab" / "nodes" / "lab-n03")
    assert hw is not None
    changed = golden.json("fleet", "lab", "--hw-changed", "-i", str(inventory))
    assert [h["name"] for h in changed] == ["lab-n03"], changed
    lines = changed[0]["hw_changed"]
    assert lines == ["memory 2048 MiB -> 1792 MiB",
                     f"+disk nvme0n1 (QEMU NVMe Ctrl serial {hw.disks[2].serial}, 1.0 GiB)"], lines
    history = golden.json("hw", "lab-n03", "--history", "-i", str(inventory))
    assert [tuple(r["changes"]) for r in history] == [(), tuple(lines)]


def test_reimage_rack_kill_resume_canary_and_rollback(rack, releases: dict[str, Build]) -> None:
    golden, _serve, inventory = rack
    a, b, c = (releases[k].build_id for k in "ABC")
    inv = ["-i", str(inventory)]

    # 1. Onto A in one wave; the controller is SIGKILLed once every host has been power cycled.
    proc = subprocess.Popen(_reimage_argv(golden, "lab", "--image", f"base@{a}", "--canary", "0",
                                          "--wave-size", "3", "--boot-timeout", "900", "--yes", *inv),
                            env=golden.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    run_id = ""
    while time.monotonic() < deadline:
        runs = golden.json("runs", "--kind", "reimage")
        if runs:
            run_id = runs[0]["id"]
            steps = golden.json("runs", "show", run_id)["steps"]
            if sum(1 for s in steps if s["step"] == "power-cycle" and s["phase"] == "done") == 3:
                break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run_id and golden.json("runs", "--kind", "reimage")[0]["status"] == "running"
    resumed = golden.json("reimage", "--resume", run_id, *inv, timeout=1500)
    assert resumed["status"] == "succeeded", resumed
    assert set(resumed["results"].values()) == {"done"}
    assert _power_intents(golden, run_id) == {(h, 1): 1 for h in resumed["results"]}
    assert {h["observed"] for h in _fleet(golden, inventory).values()} == {a}
    _hardware_as_built(golden, inventory)

    # A technician takes memory out of lab-n03 and adds an NVMe disk while it runs: its next boot shows it.
    set_machine_hardware(golden.home / "lab" / "nodes" / "lab-n03", memory_mb=1792, add_disk="nvme")

    # 2. A -> B with a canary: every host reports B.
    out = golden.run("--json", "reimage", "lab", "--image", f"rollout@{b}", "--canary", "1", "--wave-size", "2",
                     "--boot-timeout", "900", "--yes", *inv, timeout=1800)
    result = json.loads(out.stdout)
    assert out.returncode == 0 and set(result["results"].values()) == {"done"}, result
    assert {h["observed"] for h in _fleet(golden, inventory).values()} == {b}
    _hardware_changed(golden, inventory)

    # 3. C fails its health check on the canary: rolled back to B, nobody else touched.
    out = golden.run("--json", "reimage", "lab", "--image", f"rollout@{c}", "--canary", "1", "--retries", "0",
                     "--boot-timeout", "900", "--yes", *inv, timeout=1800, check=False)
    result = json.loads(out.stdout)
    assert out.returncode == 1, result
    rolled = [h for h, r in result["results"].items() if r == "rolled-back"]
    assert len(rolled) == 1 and sorted(result["results"].values()).count("not-started") == 2, result
    assert "canary failed" in result["summary"]
    steps = golden.json("runs", "show", result["run_id"])["steps"]
    assert {s["host"] for s in steps} == set(rolled)
    failed = [s for s in steps if s["step"] == "health-checks" and s["phase"] == "failed"]
    assert failed and "http-ok" in failed[0]["detail"]
    fleet = _fleet(golden, inventory)
    assert {h["observed"] for h in fleet.values()} == {b}, fleet


def test_diff_between_real_releases_lists_packages_with_archives(releases: dict[str, Build]) -> None:
    """base (A) and the web tier (B) differ by the web role's packages; the diff names them with versions and
    the archive apt installed them from, as recorded at bake time (no extra bake: the releases are cached)."""
    a, b = releases["A"], releases["B"]
    for build in (a, b):
        archives = build.manifest.package_archives
        assert set(archives) == set(build.manifest.packages)
        assert set(archives.values()) <= {"bookworm", "bookworm-updates", "bookworm-security", "local"}
        # either is right: the release's version, or the security suite's once it has shipped a fix
        assert archives["bash"] in ("bookworm", "bookworm-security")
    golden = GoldenRunner(home=bake_home())
    out = golden.json("diff", f"base@{a.build_id}", f"rollout@{b.build_id}")
    added = {p["package"]: p for p in out["packages"] if p["change"] == "added"}
    nginx = [name for name in added if name.startswith("nginx")]
    assert nginx, out["packages"]
    for name in nginx:
        assert added[name]["new"] == b.manifest.packages[name]
        assert added[name]["archive"] == b.manifest.package_archives[name]
    assert {r["role"] for r in out["roles"]} == {"web"}
    security = [p for p in out["packages"] if p["security"]]
    assert out["security_updates"] == len(security)
    assert out["packages"][: len(security)] == security  # security updates are listed first
