"""Past one machine, with the real parts: PostgreSQL, two `golden serve` replicas behind a rendered
nginx upstream, a rendered site cache in front of that, simulated lab machines on real IPMI, and a
controller that is SIGKILLed mid-wave and resumed from another home folder.

The replicas, the controllers and the lab each have a home of their own; what they share is what
several hosts would share: the PostgreSQL database and one store folder (a shared mount).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures.boot import golden_env, make_build, start_golden_serve
from tests.fixtures.common import ROOT, free_port
from tests.fixtures.lab import GoldenRunner, boots_per_mac
from toolkit.core.run import kill_group, require, run, spawn
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BUILD = "5ca1e00000000001"
GOLDEN = str(Path(sys.executable).parent / "golden")
NODES = 6
ARTIFACTS = ("vmlinuz", "initrd", "rootfs.squashfs")


def _render(out: Path, env: dict[str, str], *args: str) -> None:
    run([GOLDEN, "--json", "pxe", "render", "--out", str(out), "--interface", "lo", "--subnet", "127.0.0.0",
         "--nginx-user", "root", *args], capture=True, env=env)
    test = run(["nginx", "-t", "-c", str(out / "nginx.conf")], capture=True, check=False)
    assert test.returncode == 0, test.stderr


def _start_nginx(out: Path, port: int) -> subprocess.Popen:
    proc = spawn(["nginx", "-c", str(out / "nginx.conf"), "-g", "daemon off;"])
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            assert proc.poll() is None, (out / "run" / "error.log").read_text()
            assert time.monotonic() < deadline, "nginx did not start listening"
            time.sleep(0.1)


def _accepted_reports(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        m = re.search(rb'^golden_reports_total\{result="accepted"\} (\d+)', resp.read(), re.M)
    return int(m.group(1)) if m else 0



def test_two_replicas_a_site_cache_and_a_controller_taken_over(tmp_path: Path, pg_url: str) -> None:
    require("nginx", "nginx-light")
    shared = {"GOLDEN_STATE_URL": pg_url, "GOLDEN_STORE": str(tmp_path / "shared-store")}
    store = Store(tmp_path / "shared-store")
    make_build(store, "web", BUILD)
    first = GoldenRunner(home=tmp_path / "controller-1", extra_env=shared)
    second = GoldenRunner(home=tmp_path / "controller-2", extra_env=shared)
    central_port, site_port = free_port(), free_port()
    site_url = f"http://127.0.0.1:{site_port}"
    first.json("lab", "up", "--nodes", str(NODES), "--no-vm", "--boot-url", site_url, "--boot-time", "3")
    inventory = first.home / "lab" / "inventory.yaml"
    replicas = [start_golden_serve(tmp_path / f"replica-{i}", inventory, tmp_path / f"replica-{i}.log",
                                   env=shared) for i in (1, 2)]
    nginxes: list[subprocess.Popen] = []
    try:
        env = {**golden_env(), **shared, "GOLDEN_HOME": str(tmp_path / "render-home")}
        central, site = tmp_path / "central", tmp_path / "site"
        _render(central, env, "--server-url", f"http://127.0.0.1:{central_port}",
                "--listen", f"127.0.0.1:{central_port}", "--trusted-cache", "127.0.0.1",
                *(a for r in replicas for a in ("--upstream", r.url.removeprefix("http://"))))
        upstream = (central / "nginx-site.conf").read_text()
        assert all(f"server {r.url.removeprefix('http://')} " in upstream for r in replicas)
        _render(site, env, "--server-url", site_url, "--listen", f"127.0.0.1:{site_port}",
                "--cache-for", f"http://127.0.0.1:{central_port}")
        assert not (site / "golden-serve.service").exists()  # a site cache runs no golden serve
        nginxes = [_start_nginx(central, central_port), _start_nginx(site, site_port)]

        # the first controller starts the run; SIGKILL once the second wave's machines were cycled
        proc = subprocess.Popen([GOLDEN, "--json", "reimage", "lab", "--image", f"web@{BUILD}", "--canary", "1",
                                 "--wave-size", "2", "--boot-timeout", "90", "--contest-window", "1", "--yes",
                                 "-i", str(inventory)], env=first.env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        run_id = ""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            runs = first.json("runs", "--kind", "reimage")
            if runs:
                run_id = runs[0]["id"]
                steps = first.json("runs", "show", run_id)["steps"]
                if any(s["wave"] == 1 and s["step"] == "power-cycle" and s["phase"] == "done" for s in steps):
                    break
            time.sleep(0.2)
        assert proc.poll() is None and run_id, f"the run never reached its second wave: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        # another controller, another home folder, the same database: it takes the run over
        listed = second.json("runs", "--kind", "reimage")
        assert [r["id"] for r in listed] == [run_id] and listed[0]["status"] == "running"
        resumed = second.run("--json", "reimage", "--resume", run_id, "-i", str(inventory), timeout=400)
        out = json.loads(resumed.stdout)
        assert out["status"] == "succeeded", (out, resumed.stderr[-2000:])
        assert set(out["results"].values()) == {"done"} and len(out["results"]) == NODES
        fleet = second.json("fleet", "lab", "-i", str(inventory))
        assert [h["state"] for h in fleet] == ["in-sync"] * NODES

        # one power cycle per (host, attempt), and the machines booted exactly that often
        steps = second.json("runs", "show", run_id)["steps"]
        intents = Counter((s["host"], s["attempt"]) for s in steps
                          if s["step"] == "power-cycle" and s["phase"] == "intent")
        assert set(intents.values()) == {1}
        macs = {h["name"]: h["mac"] for h in fleet}
        per_host = Counter(host for host, _ in intents)
        assert boots_per_mac(first.home) == Counter({macs[h]: n for h, n in per_host.items()})

        # the reports were spread over both replicas, and every boot's report was accepted by one
        accepted = [_accepted_reports(r.url) for r in replicas]
        assert all(n > 0 for n in accepted), accepted
        assert sum(accepted) == sum(per_host.values()), (accepted, per_host)

        # the site fetched each artifact from the central servers once, whatever the number of machines
        central_log = (central / "run" / "access.log").read_text()
        site_log = (site / "run" / "access.log").read_text()
        for name in ARTIFACTS:
            path = f"/store/web/{BUILD}/{name}"
            assert site_log.count(f"GET {path} ") == sum(per_host.values()), name
            assert central_log.count(f"GET {path} ") == 1, (name, central_log)
        assert central_log.count("GET /boot/") == site_log.count("GET /boot/") > 0  # scripts are never cached
    finally:
        for n in nginxes:
            kill_group(n)
        for r in replicas:
            r.stop()
        first.run("lab", "down", check=False)
