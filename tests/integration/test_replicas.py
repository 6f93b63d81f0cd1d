"""Past one machine, with the real parts: PostgreSQL, two `golden serve` replicas behind a rendered
nginx upstream, a rendered site cache in front of that, simulated lab machines on real IPMI, and a
controller that is SIGKILLed mid-wave and resumed from another home folder. Then a fault of the
tier itself: a replica SIGKILLed in the middle of a storm of agent reports (the agent's own report
code, loaded from the role) loses none of them; and PostgreSQL restarted in the middle of a
rollout, which the controller waits out and finishes with every host in sync, each step once.

The replicas, the controllers and the lab each have a home of their own; what they share is what
several hosts would share: the PostgreSQL database and one store folder (a shared mount).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from tests.fixtures.boot import ServeProcess, golden_env, make_build, start_golden_serve, write_inventory
from tests.fixtures.common import ROOT, free_port
from tests.fixtures.lab import GoldenRunner, boots_per_mac
from tests.fixtures.postgres import start_cluster, stop_cluster
from toolkit.core.run import kill_group, require, run, spawn
from toolkit.lab.simboot import parse_boot_script
from toolkit.state.postgres import PostgresStateDB
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BUILD = "5ca1e00000000001"
GOLDEN = str(Path(sys.executable).parent / "golden")
NODES = 6
ARTIFACTS = ("vmlinuz", "initrd", "rootfs.squashfs")
AGENT = ROOT / "roles" / "golden_agent" / "files" / "golden-agent"
STORM = 200  # agents reporting at once
REPORTS_PER_AGENT = 8
STORM_THREADS = 24
PG_DOWN_S = 5.0  # how long PostgreSQL stays stopped in the middle of the rollout


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



@contextmanager
def _replicas_behind_nginx(tmp_path: Path, inventory: Path, shared: dict[str, str],
                           port: int) -> Iterator[list[ServeProcess]]:
    """Two `golden serve` replicas sharing PostgreSQL and the store, behind the central nginx that
    `golden pxe render` writes (listening on ``port``, trusting 127.0.0.1 as a site cache)."""
    replicas = [start_golden_serve(tmp_path / f"replica-{i}", inventory, tmp_path / f"replica-{i}.log",
                                   env=shared) for i in (1, 2)]
    nginx: subprocess.Popen | None = None
    try:
        env = {**golden_env(), **shared, "GOLDEN_HOME": str(tmp_path / "render-home")}
        central = tmp_path / "central"
        _render(central, env, "--server-url", f"http://127.0.0.1:{port}", "--listen", f"127.0.0.1:{port}",
                "--trusted-cache", "127.0.0.1",
                *(a for r in replicas for a in ("--upstream", r.url.removeprefix("http://"))))
        upstream = (central / "nginx-site.conf").read_text()
        assert all(f"server {r.url.removeprefix('http://')} " in upstream for r in replicas)
        nginx = _start_nginx(central, port)
        yield replicas
    finally:
        if nginx is not None:
            kill_group(nginx)
        for r in replicas:
            r.stop()


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
    central, site = tmp_path / "central", tmp_path / "site"
    site_nginx: subprocess.Popen | None = None
    try:
        with _replicas_behind_nginx(tmp_path, inventory, shared, central_port) as replicas:
            env = {**golden_env(), **shared, "GOLDEN_HOME": str(tmp_path / "render-home")}
            _render(site, env, "--server-url", site_url, "--listen", f"127.0.0.1:{site_port}",
                    "--cache-for", f"http://127.0.0.1:{central_port}")
            assert not (site / "golden-serve.service").exists()  # a site cache runs no golden serve
            site_nginx = _start_nginx(site, site_port)

            # the first controller starts the run; SIGKILL once the second wave's machines were cycled
            proc = subprocess.Popen([GOLDEN, "--json", "reimage", "lab", "--image", f"web@{BUILD}", "--canary", "1",
                                     "--wave-size", "2", "--boot-timeout", "90", "--contest-window", "1", "--yes",
                                     "-i", str(inventory)], env=first.env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            run_id = _wait_for_step(first, proc, 1, "power-cycle")
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
        if site_nginx is not None:
            kill_group(site_nginx)
        first.run("lab", "down", check=False)


def _load_agent() -> ModuleType:
    """The agent exactly as the role installs it (a script without .py), as a module."""
    loader = importlib.machinery.SourceFileLoader("golden_agent_storm", str(AGENT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _agent_config(agent: ModuleType, tmp_path: Path) -> dict:
    # nothing read from this machine's journal or overlay; short backoff so a storm's retries stay quick
    return {**agent.DEFAULTS, "upper_dirs": [str(tmp_path / "no-overlay")], "lower_dirs": [], "journal_command": [],
            "checks": [], "backoff_initial_s": 0.1, "backoff_max_s": 1.0, "timeout_s": 15.0, "max_attempts": 60}


def _boot_params(url: str, mac: str) -> dict[str, str]:
    """The golden.* kernel parameters of the boot script the node would fetch (its token among them)."""
    with urllib.request.urlopen(f"{url}/boot/{mac}.ipxe", timeout=30) as resp:
        script = parse_boot_script(resp.read().decode())
    assert script is not None and script.params.get("token"), mac
    return script.params


def _agent_reports(agent: ModuleType, url: str, params: dict[str, str], config: dict, tokens: list[str]) -> bool:
    """One node's agent reporting REPORTS_PER_AGENT times in a row, as its periodic loop does (each
    report spends the token the last answer gave); the tokens it sent go to ``tokens``."""
    for _ in range(REPORTS_PER_AGENT):
        tokens.append(params["token"])
        if not agent.report_until_answered(params.get("report") or f"{url}/report", params, config):
            return False
    return True


def test_a_replica_killed_in_a_report_storm_loses_no_report(tmp_path: Path, pg_url: str) -> None:
    require("nginx", "nginx-light")
    shared = {"GOLDEN_STATE_URL": pg_url, "GOLDEN_STORE": str(tmp_path / "shared-store")}
    make_build(Store(tmp_path / "shared-store"), "web", BUILD)
    macs = {f"s{i:03d}": f"52:54:00:5e:{i // 256:02x}:{i % 256:02x}" for i in range(STORM)}
    inventory = write_inventory(tmp_path / "storm.yml", {n: (m, f"web@{BUILD}") for n, m in macs.items()})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agent = _load_agent()
    said: list[str] = []
    agent.log = said.append  # the agent's own lines ("answered HTTP 502; retrying", "cannot reach")
    config = _agent_config(agent, tmp_path)
    sent: list[list[str]] = [[] for _ in range(STORM)]
    with _replicas_behind_nginx(tmp_path, inventory, shared, port) as (doomed, survivor):
        params = [_boot_params(url, mac) for mac in macs.values()]
        with ThreadPoolExecutor(STORM_THREADS) as pool:
            agents = [pool.submit(_agent_reports, agent, url, params[i], config, sent[i]) for i in range(STORM)]
            # SIGKILL one replica once it has taken a share of the storm, with the rest still to come
            while (before_kill := _accepted_reports(doomed.url)) < STORM * REPORTS_PER_AGENT // 8:
                time.sleep(0.02)
            os.kill(doomed.proc.pid, signal.SIGKILL)
            outcomes = [a.result(timeout=400) for a in agents]
        assert doomed.proc.wait(timeout=10) == -signal.SIGKILL
        after = _accepted_reports(survivor.url)
    tokens = [t for per_agent in sent for t in per_agent]
    db = PostgresStateDB(pg_url)
    try:
        with db.read() as repo:
            rows = [repo.get_token(t.split(".")[0]) for t in tokens]
    finally:
        db.close()
    recorded = sum(1 for r in rows if r is not None and r.used_at is not None)
    retries = [line for line in said if "retrying" in line or "cannot reach" in line]
    print(f"storm: {len(tokens)} reports sent by {STORM} agents, {recorded} recorded; the killed replica had "
          f"accepted {before_kill} when killed, the survivor {after} in all; agent retries: {len(retries)}")
    assert outcomes == [True] * STORM, said[-5:]  # no agent was refused or gave up
    assert len(tokens) == STORM * REPORTS_PER_AGENT
    assert recorded == len(tokens)  # every report sent was recorded (its token spent), none lost
    # the kill came mid-storm: the survivor took what the dead replica would have taken
    assert before_kill < len(tokens) // 2 < after


def _wait_for_step(runner: GoldenRunner, proc: subprocess.Popen, wave: int, step: str, timeout: float = 180) -> str:
    """The run's id once ``step`` of ``wave`` is done in its journal (the run still going)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        runs = runner.json("runs", "--kind", "reimage")
        if runs and any(s["wave"] == wave and s["step"] == step and s["phase"] == "done"
                        for s in runner.json("runs", "show", runs[0]["id"])["steps"]):
            return runs[0]["id"]
        time.sleep(0.2)
    raise AssertionError(f"the run never got to wave {wave}'s {step}: {proc.stderr.read() if proc.stderr else ''}")


def test_a_postgresql_restart_mid_rollout_is_waited_out(tmp_path: Path) -> None:
    cluster = start_cluster()  # its own: the session's cluster must not go down under other tests
    shared = {"GOLDEN_STATE_URL": cluster.url("golden"), "GOLDEN_STORE": str(tmp_path / "shared-store")}
    make_build(Store(tmp_path / "shared-store"), "web", BUILD)
    ctl = GoldenRunner(home=tmp_path / "controller", extra_env=shared)
    port = free_port()
    try:
        # machines take 15 s from their boot script to their report: the outage falls inside a wave's wait
        ctl.json("lab", "up", "--nodes", "5", "--no-vm", "--boot-url", f"http://127.0.0.1:{port}", "--boot-time", "15")
        inventory = ctl.home / "lab" / "inventory.yaml"
        serve = start_golden_serve(tmp_path / "serve", inventory, tmp_path / "serve.log", listen=f"127.0.0.1:{port}",
                                   env=shared)
        try:
            proc = subprocess.Popen([GOLDEN, "--json", "reimage", "lab", "--image", f"web@{BUILD}", "--canary", "1",
                                     "--wave-size", "2", "--boot-timeout", "120", "--contest-window", "1", "--yes",
                                     "-i", str(inventory)], env=ctl.env(), cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            run_id = _wait_for_step(ctl, proc, 1, "power-cycle")
            cluster.stop()
            time.sleep(PG_DOWN_S)
            assert proc.poll() is None  # still waiting, not crashed
            cluster.start()
            out, err = proc.communicate(timeout=400)
        finally:
            serve.stop()
        result = json.loads(out)
        assert proc.returncode == 0 and result["status"] == "succeeded", (result, err[-2000:])
        assert set(result["results"].values()) == {"done"} and len(result["results"]) == 5
        # the progress log says what happened: one wait, one recovery
        assert err.count("unreachable") == 1 and "waiting up to 300 s for it to come back" in err, err
        assert re.search(r"reachable again after \d+\.\d s; continuing", err), err
        fleet = ctl.json("fleet", "lab", "-i", str(inventory))
        assert [h["state"] for h in fleet] == ["in-sync"] * 5
        # each step of each host journaled once, all in the first attempt; each machine booted once
        steps = ctl.json("runs", "show", run_id)["steps"]
        per_step = Counter((s["host"], s["step"], s["phase"]) for s in steps)
        assert set(per_step.values()) == {1}, [k for k, n in per_step.items() if n > 1]
        assert {s["attempt"] for s in steps} == {1}
        assert {(h, p) for h, step, p in per_step if step == "power-cycle"} == {
            (h["name"], p) for h in fleet for p in ("intent", "done")}
        assert boots_per_mac(ctl.home) == Counter({h["mac"]: 1 for h in fleet})
    finally:
        ctl.run("lab", "down", check=False)
        stop_cluster(cluster)
