"""A reimage fails closed and tells the truth: simulated lab machines on real IPMI, a real `golden serve`.

- SIGINT mid-wave marks the run interrupted and names the resume command; the resume finishes
  every host in-sync and no host is power cycled twice for one attempt (counted by the BMCs).
- An impostor that fetches every host's boot script and posts reports with the tokens cannot make
  a reimage succeed while the machines are still booting: each host fails as contested or with
  no genuine report.
- A build whose checks did not pass reaches no host without --force --reason, which is audited.
- With the state folder on a full file system, /boot still answers known hosts and publish exits 1
  with one line.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build, start_golden_serve
from tests.fixtures.common import ROOT, free_port
from tests.fixtures.lab import GoldenRunner, boots_per_mac
from toolkit.lab.simboot import parse_boot_script
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

GOOD = "900d000000000001"
BAD = "bad0000000000001"


def _lab(tmp_path: Path, nodes: int, boot_time: float) -> tuple[GoldenRunner, Path, object]:
    home = tmp_path / "home"
    golden = GoldenRunner(home=home)
    store = Store(home / "store")
    make_build(store, "web", GOOD)
    make_build(store, "web", BAD, checks_passed=False)
    port = free_port()
    golden.json("lab", "up", "--nodes", str(nodes), "--no-vm", "--boot-url", f"http://127.0.0.1:{port}",
                "--boot-time", str(boot_time))
    inventory = home / "lab" / "inventory.yaml"
    serve = start_golden_serve(home, inventory, tmp_path / "serve.log", listen=f"127.0.0.1:{port}")
    return golden, inventory, serve


def _reimage_argv(golden: GoldenRunner, *args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "golden"), "reimage", *args]



def test_sigint_mid_wave_then_resume(tmp_path: Path) -> None:
    # boot_time 12: the window between "wave 2 cycled" and the run's end must outlast a few CLI polls under load
    golden, inventory, serve = _lab(tmp_path, nodes=5, boot_time=12)
    try:
        errf = tmp_path / "reimage.stderr"
        with open(errf, "w") as err:  # stderr to a file: progress comes as lines with elapsed times
            proc = subprocess.Popen(_reimage_argv(golden, "lab", "--image", f"web@{GOOD}", "--canary", "1",
                                                  "--wave-size", "2", "--boot-timeout", "60", "--contest-window",
                                                  "1", "--yes", "-i", str(inventory)),
                                    env=golden.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
            run_id = ""
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # mid-wave: the second wave's hosts were power cycled
                runs = golden.json("runs", "--kind", "reimage")
                if runs:
                    run_id = runs[0]["id"]
                    steps = golden.json("runs", "show", run_id)["steps"]
                    if any(s["wave"] == 1 and s["step"] == "power-cycle" and s["phase"] == "done" for s in steps):
                        break
                time.sleep(0.3)
            assert run_id, "the run never reached its second wave"
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
        stderr = errf.read_text()
        assert proc.returncode == 130, stderr
        assert f"golden reimage --resume {run_id}" in stderr and "nothing was rolled back" in stderr
        assert "partial work was rolled back" not in stderr and "Traceback" not in stderr
        assert re.search(r"^reimage: wave 1/3: .* \(\+\d+s\)$", stderr, re.M), stderr
        [listed] = [r for r in golden.json("runs", "--kind", "reimage") if r["id"] == run_id]
        assert listed["status"] == "interrupted" and "--resume" in listed["summary"]

        resumed = golden.run("--json", "reimage", "--resume", run_id, "-i", str(inventory), timeout=300)
        out = json.loads(resumed.stdout)
        assert out["status"] == "succeeded" and set(out["results"].values()) == {"done"}, out
        assert "Traceback" not in resumed.stderr
        fleet = golden.json("fleet", "lab", "-i", str(inventory))
        assert [h["state"] for h in fleet] == ["in-sync"] * 5
        # One power action per (host, attempt) in the journal, and the machines booted exactly that often.
        steps = golden.json("runs", "show", run_id)["steps"]
        intents = Counter((s["host"], s["attempt"]) for s in steps
                          if s["step"] == "power-cycle" and s["phase"] == "intent")
        assert set(intents.values()) == {1}
        macs = {h["name"]: h["mac"] for h in fleet}
        per_host = Counter(host for host, _ in intents)
        assert boots_per_mac(golden.home) == Counter({macs[h]: n for h, n in per_host.items()})
        # reimaging only lab machines is the build's lab boot test, a promotion gate
        db = sqlite3.connect(golden.home / "state.db")
        gates = db.execute("SELECT image, build_id, gate, passed FROM build_gates").fetchall()
        db.close()
        assert gates == [("web", GOOD, "lab-boot", 1)]
    finally:
        serve.stop()
        golden.run("lab", "down", check=False)


def _impostor(url: str, macs: list[str], stop: threading.Event, sent: Counter[str]) -> None:
    """Fetch each host's boot script and answer for it at once, with the token the script carries."""
    while not stop.is_set():
        for mac in macs:
            try:
                with urllib.request.urlopen(f"{url}/boot/{mac}.ipxe", timeout=5) as resp:
                    script = parse_boot_script(resp.read().decode())
                if script is None:
                    continue
                p = script.params
                report = {"mac": mac, "build_id": p.get("build", ""), "image": p.get("image", ""),
                          "token": p.get("token", ""), "hostname": "impostor", "booted_at": "2026-12-01T00:00:00Z",
                          "uptime_s": 30.0, "drift": [], "agent_version": "impostor",
                          "checks": {}}
                req = urllib.request.Request(f"{url}/report", data=json.dumps(report).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=5) as resp:
                        sent[str(resp.status)] += 1
                except urllib.error.HTTPError as exc:
                    sent[str(exc.code)] += 1
            except (urllib.error.URLError, OSError):
                pass
        stop.wait(0.2)


def test_impostor_cannot_fake_a_boot(tmp_path: Path) -> None:
    # the machines take longer to boot (120 s) than the reimage waits for them (20 s)
    golden, inventory, serve = _lab(tmp_path, nodes=3, boot_time=120)
    stop = threading.Event()
    sent: Counter[str] = Counter()
    macs = [h["mac"] for h in golden.json("fleet", "lab", "-i", str(inventory))]
    thread = threading.Thread(target=_impostor, args=(serve.url, macs, stop, sent), daemon=True)
    thread.start()
    try:
        res = golden.run("--json", "reimage", "lab", "--image", f"web@{GOOD}", "--canary", "0", "--wave-size", "3",
                         "--boot-timeout", "20", "--retries", "0", "--max-failures", "0", "--contest-window", "3",
                         "--yes", "-i", str(inventory), timeout=200, check=False)  # consoles captured by default
        out = json.loads(res.stdout)
        assert res.returncode == 1, out
        assert set(out["results"].values()) == {"failed"}, out
        steps = golden.json("runs", "show", out["run_id"])["steps"]
        ends = {s["host"]: json.loads(s["detail"])["error"] for s in steps if s["step"] == "host"}
        assert len(ends) == 3
        for host, error in ends.items():
            assert error.startswith(("boot contested", "no genuine report")), (host, error)
        assert any(e.startswith("boot contested") for e in ends.values()), ends  # the impostor was caught
        # no host reported: each one's console, captured over SOL for the attempt, is kept with the run
        shown = golden.run("runs", "show", out["run_id"], "--host", "lab-n02").stdout
        assert "--- serial console of lab-n02, attempt 1: last " in shown, shown
        assert "lab-n02: power on, booting from network" in shown.split("--- serial console")[1], shown
        console = golden.json("runs", "show", out["run_id"], "--host", "lab-n02")["console"]
        assert console["attempt"] == 1 and Path(console["path"]).stat().st_size <= 256 * 1024
        assert golden.lab_password not in (Path(console["path"]).parent / "capture.log").read_text()
        metrics = urllib.request.urlopen(f"{serve.url}/metrics", timeout=5).read().decode()
        assert re.search(r"^golden_boot_attempts_contested_total [1-9]", metrics, re.M), metrics
        assert sent["200"] + sent["403"] > 0  # the impostor did talk to the server
    finally:
        stop.set()
        thread.join(timeout=10)
        serve.stop()
        golden.run("lab", "down", check=False)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_unchecked_build_needs_force_and_reason(tmp_path: Path) -> None:
    golden, inventory, serve = _lab(tmp_path, nodes=1, boot_time=0)
    try:
        argv = ["reimage", "lab", "--image", f"web@{BAD}", "--canary", "0", "--wave-size", "1", "--contest-window",
                "0.5", "--boot-timeout", "30", "--yes", "-i", str(inventory)]
        refused = golden.run(*argv, check=False)
        assert refused.returncode == 1 and "refused by the checks gate" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and golden.json("runs", "--kind", "reimage") == []
        assert golden.run(*argv, "--force", check=False).returncode == 2  # --force needs --reason
        forced = golden.json(*argv, "--force", "--reason", "INC-42: checks waived by ops")
        assert forced["status"] == "succeeded"
        run = golden.json("runs", "show", forced["run_id"])["run"]
        assert run["plan"]["forced"] is True and run["plan"]["reason"] == "INC-42: checks waived by ops"
        db = sqlite3.connect(golden.home / "state.db")
        audit = db.execute("SELECT action, subject, reason FROM audit_log").fetchall()
        db.close()
        assert audit == [("reimage-forced", f"web/{BAD}", "INC-42: checks waived by ops")]
    finally:
        serve.stop()
        golden.run("lab", "down", check=False)


INVENTORY = """\
all:
  children:
    rack1:
      hosts:
        n1: {{mac: "52:54:00:aa:00:01", bmc_address: 127.0.0.1, image: "web@{build}"}}
"""


def test_full_state_disk_still_boots_and_publish_fails_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "golden-test-full", str(home)], check=True)
    serve = None
    try:
        golden = GoldenRunner(home=home)
        make_build(Store(home / "store"), "web", GOOD)
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(INVENTORY.format(build=GOOD))
        golden.run("publish", "web", GOOD, "--channel", "dev")
        serve = start_golden_serve(home, inventory, tmp_path / "serve.log")
        db = sqlite3.connect(home / "state.db")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # an empty WAL: any write must grow a file
        db.close()
        with open(home / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        with urllib.request.urlopen(f"{serve.url}/boot/52:54:00:aa:00:01.ipxe", timeout=10) as resp:
            script = resp.read().decode()
            assert resp.status == 200
        assert f"golden.build={GOOD}" in script
        published = golden.run("publish", "web", GOOD, "--channel", "staging", check=False)
        assert published.returncode == 1, published.stderr
        lines = published.stderr.strip().splitlines()
        assert lines[0] == f"golden: error: state database is full: {home / 'state.db'}", published.stderr
        assert "Traceback" not in published.stderr and len(lines) <= 2
        metrics = urllib.request.urlopen(f"{serve.url}/metrics", timeout=5).read().decode()
        assert re.search(r"^golden_state_write_failures_total [1-9]", metrics, re.M), metrics
    finally:
        if serve is not None:
            serve.stop()
        subprocess.run(["umount", str(home)], check=False)
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log
    assert log.count("cannot write the state database") == 1  # logged once
