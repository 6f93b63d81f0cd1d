"""Drain, reimage, verify, return: the shipped playbooks against a real haproxy, around real reimage runs.

Real processes: Debian's haproxy in front of two backends (one HTTP server per host, in this test),
ansible-runner running playbooks/lb-drain.yml, web-verify.yml and lb-enable.yml, simulated lab
machines behind virtual IPMI BMCs, `golden serve`, and `golden reimage` controllers that the test
SIGKILLs. A bounded load generator sends requests through haproxy the whole time: none may fail,
and at no sampled moment may both backends be out of rotation (max_unavailable: 1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fixtures.boot import ServeProcess, make_build, start_golden_serve
from tests.fixtures.common import ROOT, free_port
from tests.fixtures.haproxy import Haproxy, StateWatch, start_haproxy
from tests.fixtures.lab import GoldenRunner
from tests.fixtures.webtier import Load, hook_vars, make_project
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

GOLDEN = str(Path(sys.executable).parent / "golden")
B1, B2 = "1ea5e00000000001", "1ea5e00000000002"
HOSTS = ("lab-n01", "lab-n02")


@dataclass
class Backends:
    """One tiny web server per host; ``gate[host] = 503`` makes that host answer 503 until cleared."""

    ports: dict[str, int]
    gate: dict[str, int] = field(default_factory=dict)
    servers: list[ThreadingHTTPServer] = field(default_factory=list)

    @classmethod
    def start(cls, hosts: tuple[str, ...]) -> Backends:
        b = cls({})
        for host in hosts:
            b.ports[host] = b._serve(host)
        return b

    def _serve(self, host: str) -> int:
        gate = self.gate

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = gate.get(host, 200)
                body = f"served by {host}\n".encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # haproxy's health check hangs up once it has read the status line

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)
        return int(server.server_address[1])

    def stop(self) -> None:
        for s in self.servers:
            s.shutdown()


@dataclass
class Tier:
    golden: GoldenRunner
    inventory: list[str]
    serve: ServeProcess
    haproxy: Haproxy
    watch: StateWatch
    backends: Backends
    load: Load
    extra_env: dict[str, str]

    def reimage(self, *args: str) -> subprocess.Popen[str]:
        argv = [GOLDEN, "--json", "reimage", *args, "--yes", "--contest-window", "2", "--boot-timeout", "60"]
        for inv in self.inventory:
            argv += ["-i", inv]
        return subprocess.Popen(argv, env=self.golden.env(), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def steps(self, run_id: str) -> list[dict]:
        return self.golden.json("runs", "show", run_id)["steps"]

    def fleet(self) -> dict[str, dict]:
        return {h["name"]: h for h in self.golden.json("fleet", "lab", *[a for i in self.inventory
                                                                         for a in ("-i", i)])}


def _tier(tmp_path: Path, extra_env: dict[str, str], settle: str | None) -> Iterator[Tier]:
    home = tmp_path / "home"
    project = make_project(tmp_path / "project", "lab", timeout="2m", settle=settle)
    golden = GoldenRunner(home=home, extra_env={"GOLDEN_PROJECT": str(project), **extra_env})
    store = Store(home / "store")
    for b in (B1, B2):
        make_build(store, "web", b)
    port = free_port()
    golden.json("lab", "up", "--nodes", "2", "--no-vm", "--boot-time", "2", "--boot-url", f"http://127.0.0.1:{port}")
    backends = Backends.start(HOSTS)
    front = free_port()
    haproxy = start_haproxy(tmp_path / "haproxy", f"127.0.0.1:{front}",
                            {h: f"127.0.0.1:{p}" for h, p in backends.ports.items()})
    lab_inv = home / "lab" / "inventory.yaml"
    addrs = {h: ("127.0.0.1", p) for h, p in backends.ports.items()}
    hooks_inv = hook_vars(tmp_path / "hooks.yml", haproxy.sock, addrs, verify_retries=60)
    serve = start_golden_serve(home, lab_inv, tmp_path / "serve.log", listen=f"127.0.0.1:{port}", env=extra_env)
    load = None
    watch = StateWatch(haproxy.sock)
    try:
        haproxy.wait_up(list(HOSTS))
        watch.start()
        load = Load.start(f"http://127.0.0.1:{front}/", tmp_path / "load.jsonl", rate=25, max_seconds=500)
        load.wait_for(10)
        yield Tier(golden, [str(lab_inv), str(hooks_inv)], serve, haproxy, watch, backends, load, extra_env)
    finally:
        if load is not None:
            load.stop()
        watch.stop()
        serve.stop()
        haproxy.stop()
        backends.stop()
        golden.run("lab", "down", check=False)


@pytest.fixture
def tier(tmp_path: Path) -> Iterator[Tier]:
    yield from _tier(tmp_path, {}, settle="20s")


@pytest.fixture
def pg_tier(tmp_path: Path, pg_url: str) -> Iterator[Tier]:
    yield from _tier(tmp_path, {"GOLDEN_STATE_URL": pg_url}, settle=None)


def _run_id(t: Tier, proc: subprocess.Popen[str], before: frozenset[str] = frozenset()) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ids = [r["id"] for r in t.golden.json("runs", "--kind", "reimage") if r["id"] not in before]
        if ids:
            return str(ids[0])
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no reimage run started")


def _wait_step(t: Tier, run_id: str, step: str, phase: str, proc: subprocess.Popen[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [s for s in t.steps(run_id) if s["step"] == step and s["phase"] == phase]
        if hits:
            return hits[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never wrote {step} {phase}: {t.steps(run_id)}")


def _kill(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _counts(steps: list[dict]) -> Counter[tuple[str, int, str, str]]:
    return Counter((s["host"], s["attempt"], s["step"], s["phase"]) for s in steps)


def _assert_service_held(t: Tier) -> None:
    t.load.stop()
    sent, failed, rate = t.load.summary()
    assert failed == [], failed[:5]
    assert rate >= 20, (sent, rate)
    assert t.watch.most_out_at_once() <= 1, t.watch.changes
    print(f"load: {sent} requests at {rate:.1f}/s, 0 failed; haproxy states: "
          + ", ".join(f"{name} {st} at +{at - t.watch.changes[0][0]:.1f}s" for at, name, st in t.watch.changes))


def _assert_back_in_rotation(t: Tier) -> None:
    t.haproxy.wait_up(list(HOSTS), timeout=10)
    fleet = t.fleet()
    assert {h: fleet[h]["state"] for h in HOSTS} == {h: "in-sync" for h in HOSTS}, fleet
    assert all(fleet[h]["rotation"] is None for h in HOSTS), fleet


def _assert_each_hook_once(steps: list[dict], attempts: dict[str, int]) -> None:
    counts = _counts(steps)
    for host, attempt in attempts.items():
        for step in ("drain", "verify", "undrain"):
            assert counts[(host, attempt, step, "done")] == 1, (host, step, counts)
            assert counts[(host, attempt, step, "failed")] == 0, (host, step, counts)
        assert counts[(host, attempt, "drain", "intent")] == 1, counts  # a drain that succeeded never repeats
        assert counts[(host, attempt, "undrain", "intent")] == 1, counts
        assert counts[(host, attempt, "power-cycle", "intent")] == 1, counts


def _assert_out_before_power_and_back_after_verify(t: Tier, steps: list[dict]) -> None:
    for host in HOSTS:
        power = min(s["at"] for s in steps if s["host"] == host and s["step"] == "power-cycle")
        verified = max(s["at"] for s in steps if s["host"] == host and s["step"] == "verify" and s["phase"] == "done")
        spans = [sp for sp in t.watch.out_of_rotation(host) if sp[0] <= power <= sp[1]]
        assert spans, (host, power, t.watch.changes)  # out of rotation when its power cycle was asked for
        assert spans[0][1] >= verified, (host, spans, verified)  # and back only once its verify had passed


def test_kill_after_drain_then_resume(tier: Tier) -> None:
    """Criterion 3a: SIGKILL after the drain, before the power cycle (in the settle wait); resume."""
    proc = tier.reimage("lab", "--image", f"web@{B2}", "--canary", "1", "--wave-size", "1")
    run_id = _run_id(tier, proc)
    drained = _wait_step(tier, run_id, "drain", "done", proc)
    assert not [s for s in tier.steps(run_id) if s["step"] == "bootdev-pxe"]
    _kill(proc)
    host = drained["host"]
    # Never drained without saying so: the fleet shows it, with the run that holds it out.
    fleet = tier.fleet()
    assert fleet[host]["state"] == "drained" and run_id in fleet[host]["rotation"], fleet[host]
    out = tier.golden.run("--json", "reimage", "--resume", run_id, check=False, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["status"] == "succeeded" and set(result["results"].values()) == {"done"}, result
    steps = tier.steps(run_id)
    _assert_each_hook_once(steps, {h: 1 for h in HOSTS})
    _assert_out_before_power_and_back_after_verify(tier, steps)
    _assert_back_in_rotation(tier)
    _assert_service_held(tier)


def test_kill_during_verify_then_resume_from_another_home(pg_tier: Tier, tmp_path: Path) -> None:
    """Criterion 3b on PostgreSQL: SIGKILL after the boot report, before the undrain (the verify is
    waiting for the service); another home on the same database resumes and returns both hosts."""
    t = pg_tier
    proc = t.reimage("lab", "--image", f"web@{B2}", "--canary", "1", "--wave-size", "1")
    run_id = _run_id(t, proc)
    drain = _wait_step(t, run_id, "drain", "done", proc)
    t.backends.gate[drain["host"]] = 503  # it is out of rotation: the load never asks it
    _wait_step(t, run_id, "await-report", "done", proc)
    _wait_step(t, run_id, "verify", "intent", proc)
    _kill(proc)
    del t.backends.gate[drain["host"]]
    other = GoldenRunner(home=tmp_path / "home2", extra_env={**t.golden.extra_env,
                                                             "GOLDEN_STORE": str(t.golden.home / "store")})
    argv = ["--json", "reimage", "--resume", run_id, *[a for i in t.inventory for a in ("-i", i)]]
    out = other.run(*argv, check=False, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["status"] == "succeeded"
    steps = t.steps(run_id)
    _assert_each_hook_once(steps, {h: 1 for h in HOSTS})
    # The verify the kill cut short had proved nothing: it ran again, in full, once.
    assert _counts(steps)[(drain["host"], 1, "verify", "intent")] == 2
    _assert_out_before_power_and_back_after_verify(t, steps)
    _assert_back_in_rotation(t)
    _assert_service_held(t)


def test_two_controllers_share_one_budget(tier: Tier) -> None:
    """max_unavailable holds across two controllers at once: the second waits for the first's host."""
    first = tier.reimage("lab-n01", "--image", f"web@{B2}", "--canary", "0")
    run_a = _run_id(tier, first)
    _wait_step(tier, run_a, "drain", "done", first)
    second = tier.reimage("lab-n02", "--image", f"web@{B2}", "--canary", "0")
    run_b = _run_id(tier, second, frozenset({run_a}))
    _, err_a = first.communicate(timeout=300)
    _, err_b = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, (err_a[-2000:], err_b[-2000:])
    steps_a, steps_b = tier.steps(run_a), tier.steps(run_b)
    undrained_a = max(s["at"] for s in steps_a if s["step"] == "undrain" and s["phase"] == "done")
    drain_b = min(s["at"] for s in steps_b if s["step"] == "drain")
    assert drain_b >= undrained_a, (drain_b, undrained_a)  # B's host left only once A's was back
    _assert_back_in_rotation(tier)
    _assert_service_held(tier)
