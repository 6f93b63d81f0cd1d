"""golden nightly end to end, in a copy of a project: a role change is baked, boots on the nightly's own
QEMU lab node, reaches dev and staging (whose policy requires the lab boot); the next nightly finds
nothing changed, upstream included, in seconds and without DIB; a broken agent is baked but fails its
lab boot, so neither channel moves, the report names the gate with the node's console, exit 1.

Two bakes and two lab boots in all: the baseline is the reimage e2e's release B (cached, hard-linked
into this test's store); the failing boot waits a timeout derived from the passing boot just measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_reimage import SPEC, bake_release
from tests.fixtures.common import ROOT
from tests.fixtures.lab import GoldenRunner
from toolkit.core.config import load_settings
from toolkit.state import open_state
from toolkit.store.artifacts import Store
from toolkit.store.policy import LAB_BOOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(7200)]

BAKE_AND_BOOT_S = 3600  # one nightly: a refreshed bake (~5-10 min here) and a TCG lab boot


def _project(tmp: Path) -> Path:
    project = tmp / "project"
    (project / "images").mkdir(parents=True)
    (project / "images" / "rollout.yaml").write_text(SPEC.format(rel="B", port=80))
    shutil.copytree(ROOT / "roles", project / "roles", symlinks=True)  # a copy: this test edits it
    (project / "golden.yaml").write_text("promotion:\n  staging: {lab_boot: true}\n")
    return project


def _home(tmp: Path, baseline) -> Path:
    home = tmp / "home"
    (home / "store" / "rollout").mkdir(parents=True)
    # hard links: a build's files never change (immutable), and this costs no copy of 340 MB
    subprocess.run(["cp", "-al", str(baseline.path), str(home / "store" / "rollout" / baseline.build_id)], check=True)
    Store(home / "store").set_snapshot("rollout", baseline.manifest.inputs["snapshot"])
    return home


def _nightly(golden: GoldenRunner, *args: str, timeout: float = BAKE_AND_BOOT_S) -> tuple[int, dict, float]:
    started = time.monotonic()
    out = golden.run("--json", "nightly", "--images", "rollout", *args, timeout=timeout, check=False)
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.returncode, json.loads(out.stdout), time.monotonic() - started


def _gates(image: dict) -> dict[str, dict]:
    return {g["name"]: g for g in image["gates"]}


def _channels(home: Path, project: Path) -> dict[str, str | None]:
    db = open_state(load_settings(project=project, home=home))
    with db.read() as repo:
        return {ch: (row.build_id if (row := repo.get_channel("rollout", ch)) else None) for ch in ("dev", "staging")}


def _bake_runs(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "runs").glob("*-bake-rollout-*")) if (home / "runs").is_dir() else []


def test_nightly_role_change_no_change_and_broken_agent(tmp_path: Path) -> None:
    baseline = bake_release("B", 80)
    project = _project(tmp_path)
    home = _home(tmp_path, baseline)
    golden = GoldenRunner(home=home, extra_env={"GOLDEN_PROJECT": str(project)})
    b = baseline.build_id
    golden.run("publish", "rollout", b, "--channel", "dev")
    golden.run("promote", "rollout", "--from", "dev", "--to", "staging", "--force", "--reason", "test baseline")

    # 1. A role template changes: bake, boot on the nightly lab, publish to dev, promote to staging.
    web = project / "roles" / "web" / "templates" / "index.html.j2"
    web.write_text(web.read_text() + "<!-- nightly e2e: a role change -->\n")
    rc, report, _ = _nightly(golden)
    image = report["images"][0]
    assert rc == 0 and report["status"] == "succeeded", json.dumps(report, indent=1)[-4000:]
    new = image["new_build"]
    assert image["outcome"] == "promoted" and image["old_build"] == b and new and new != b
    assert [r["role"] for r in image["diff"]["roles"]] == ["web"] and image["diff"]["roles"][0]["change"] == "changed"
    assert "role web" in image["reasons"][0]
    gates = _gates(image)
    assert list(gates) == ["plan", "upstream-check", "bake", "bake-checks", "lab-boot", "publish-dev",
                           "promote-staging"]
    assert all(g["passed"] for g in gates.values())
    assert _channels(home, project) == {"dev": new, "staging": new}
    with open_state(load_settings(project=project, home=home)).read() as repo:
        assert repo.gate_passed("rollout", new, LAB_BOOT)  # recorded by the lab reimage, which staging required
    assert len(_bake_runs(home)) == 1
    assert not (home / "nightly-lab").exists()  # the nightly's lab is down again
    boot_s = gates["lab-boot"]["seconds"]
    md = (home / "runs" / report["run_id"] / "report.md").read_text()
    assert "role web: changed" in md and new in md
    print(f"nightly 1 (role change): bake {gates['bake']['seconds']:.0f} s, lab boot {boot_s:.0f} s")

    # 2. Nothing changed, upstream included: "no change" in seconds, no DIB run, no lab.
    rc, report, seconds = _nightly(golden, timeout=300)
    image = report["images"][0]
    assert rc == 0 and image["outcome"] == "no change" and image["new_build"] == new, image
    assert list(_gates(image)) == ["plan", "upstream-check"] and _gates(image)["upstream-check"]["passed"]
    assert len(_bake_runs(home)) == 1 and [p.name for p in (home / "store" / "rollout").iterdir()
                                             if not p.name.startswith(".")].__len__() == 2
    assert image["seconds"] < 60, image  # a bake alone takes minutes here
    print(f"nightly 2 (no change): {seconds:.1f} s for the whole command, {image['seconds']:.1f} s for the image")
    last = golden.run("nightly", "--last")
    assert "rollout: no change" in last.stdout and report["run_id"] in last.stdout
    listed = golden.json("runs", "--kind", "nightly")
    assert [r["id"] for r in listed][:1] == [report["run_id"]] and len(listed) == 2

    # 3. A broken agent (it can never start) is baked and passes the bake checks, fails the lab boot.
    unit = project / "roles" / "golden_agent" / "templates" / "golden-agent.service.j2"
    unit.write_text(unit.read_text().replace("[Service]\n", "[Service]\nExecStartPre=/bin/false\n"))
    timeout = min(900, max(300, round(2 * boot_s)))  # twice what a good boot just took: realistic, not blind
    rc, report, _ = _nightly(golden, "--boot-timeout", str(timeout))
    image = report["images"][0]
    assert rc == 1 and report["status"] == "failed", json.dumps(report, indent=1)[-4000:]
    assert image["outcome"] == "failed" and image["failed_gate"] == "lab-boot"
    broken = image["new_build"]
    assert broken not in (new, b)
    gates = _gates(image)
    assert gates["bake"]["passed"] and gates["bake-checks"]["passed"] and not gates["lab-boot"]["passed"]
    assert "publish-dev" not in gates and "promote-staging" not in gates
    assert "Failed to start golden" in gates["lab-boot"]["excerpt"], gates["lab-boot"]["excerpt"]
    assert "serial console" in gates["lab-boot"]["excerpt"]
    assert f"no genuine report of build {broken}" in gates["lab-boot"]["detail"], gates["lab-boot"]["detail"]
    assert [r["role"] for r in image["diff"]["roles"]] == ["golden_agent"]
    assert _channels(home, project) == {"dev": new, "staging": new}  # neither channel moved
    with open_state(load_settings(project=project, home=home)).read() as repo:
        assert not repo.gate_passed("rollout", broken, LAB_BOOT)
    last = golden.run("nightly", "--last", check=False)
    assert last.returncode == 1 and "lab-boot failed; excerpt:" in last.stdout
    page = (home / "runs" / report["run_id"] / "report.html").read_text()
    assert "Failed to start golden" in page and "src=" not in page
    os.sync()
