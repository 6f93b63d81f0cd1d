"""Swap a live web tier without dropping a request: real haproxy, the shipped playbooks, two QEMU machines.

Issue 22, criteria 1 and 2. Everything runs inside the test's boot namespace (tests/fixtures/bootnet.py):
the site DHCP server and the rendered proxyDHCP + nginx, `golden serve`, the lab's virtual BMCs and
its two BIOS machines on the bridge, haproxy in front of them, a load generator sending 25 requests
a second through haproxy, and the `golden reimage` controller whose hooks run playbooks/lb-drain.yml,
web-verify.yml and lb-enable.yml. The test process watches haproxy through its admin socket (a file).

The releases are the web image of tests/e2e/test_reimage.py (``rollout``): v1 is its release B
(baked once for both files), v2 a second release, v3 a release whose nginx answers 500 to every
request while its boot-stage check (nginx enabled) passes: only the verify from outside can tell.
v1 is installed by the first reimage (no hooks: nothing serves yet); v2 and v3 go through the hooks.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.test_reimage import SPEC, bake_release
from tests.fixtures.bake import bake_cached_project, bake_home
from tests.fixtures.bootnet import BootNet, boot_network
from tests.fixtures.haproxy import StateWatch, start_haproxy
from tests.fixtures.lab import GoldenRunner
from tests.fixtures.webtier import Load, hook_vars, make_project
from toolkit.store.artifacts import Build

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

GOLDEN = str(Path(sys.executable).parent / "golden")
BROKEN_SPEC = SPEC.replace("      web_port: {port}\n", "      web_port: {port}\n      web_status: 500\n").split(
    "  - name: http-ok")[0]
HOSTS = ("lab-n01", "lab-n02")
ADDRS = {"lab-n01": "10.77.0.141", "lab-n02": "10.77.0.142"}  # pinned by the site DHCP server
FRONT = "10.77.0.1:8080"
BOOT_TIMEOUT = 900
VERIFY_TASK = "Ask the host for its page from the controller"  # playbooks/web-verify.yml


def bake_releases() -> dict[str, Build]:
    """v1, v2 (good) and v3 (answers 500), baked into the shared test store once per input hash."""
    return {"v1": bake_release("B", 80), "v2": bake_release("v2", 80),
            "v3": bake_cached_project("rollout-project-v3", "rollout", BROKEN_SPEC.format(rel="v3", port=80))}


def in_ns(net: BootNet, home: Path, project: Path) -> GoldenRunner:
    """`golden` inside the boot namespace, with a home and a project."""
    return GoldenRunner(home=home, extra_env={"GOLDEN_PROJECT": str(project)}, prefix=net.ns_exec(net.boot_ns))


def _reimage(g: GoldenRunner, image: str, inventory: list[str], *flags: str) -> tuple[int, dict, str]:
    argv = ["--json", "reimage", "lab", "--image", image, "--boot-timeout", str(BOOT_TIMEOUT), "--retries", "0",
            "--yes", *flags, *[a for i in inventory for a in ("-i", i)]]
    out = g.run(*argv, timeout=3 * BOOT_TIMEOUT, check=False)
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else {}), out.stderr


def _serial_tails(home: Path) -> str:
    return "\n".join(f"--- {p.parent.name}\n{p.read_text(errors='replace')[-1500:]}"
                     for p in sorted((home / "lab" / "nodes").glob("*/serial.log")))


def _maintenance_order(log: str) -> list[tuple[str, str]]:
    """haproxy's own words, in its order: (server, 'out' | 'in') for each maintenance change it logged."""
    out = []
    for line in log.splitlines():
        if line.startswith("[") or "Server web/" not in line:
            continue  # each event is logged twice (with and without its [WARNING] prefix): keep one
        server = line.split("Server web/")[1].split()[0]
        if "going DOWN for maintenance" in line:
            out.append((server, "out"))
        elif "leaving forced maintenance" in line:
            out.append((server, "in"))
    return out


def _check_swap(watch: StateWatch, steps: list[dict], hosts: tuple[str, ...]) -> None:
    """Each host was out of rotation when its power cycle was asked for, and back only after its last verify."""
    for host in hosts:
        power = [s["at"] for s in steps if s["host"] == host and s["step"] == "power-cycle" and s["phase"] == "intent"]
        verified = [s["at"] for s in steps if s["host"] == host and s["step"] == "verify" and s["phase"] == "done"]
        assert power and verified, (host, steps)
        spans = watch.out_of_rotation(host)
        span = next((sp for sp in spans if sp[0] <= power[0] <= sp[1]), None)
        assert span is not None, (host, power, watch.changes)
        assert all(span[0] <= p <= span[1] for p in power), (host, power, span)  # out for every power cycle
        assert span[1] >= max(verified), (host, span, verified)  # and back only once the last verify passed


def test_swap_a_live_web_tier_without_dropping_a_request(tmp_path: Path) -> None:
    rel = bake_releases()
    home = tmp_path / "home"
    home.mkdir()
    (home / "store").symlink_to(bake_home() / "store")  # the baked releases; this test never deletes builds
    plain = make_project(tmp_path / "plain", "lab")
    (plain / "golden.yaml").unlink()  # the first install: nothing serves yet, no hooks
    hooked = make_project(tmp_path / "hooked", "lab", timeout="5m")
    lab_inv = home / "lab" / "inventory.yaml"

    def lab_on_bridge(net: BootNet) -> Path:
        in_ns(net, home, plain).run("lab", "up", "--nodes", "2", "--bridge", net.bridge, "--memory", "2048",
                                   "--boot-url", net.server_url)
        macs = {n["name"]: n["mac"] for n in in_ns(net, home, plain).json("lab", "status")["nodes"]}
        net.pin_addresses({macs[h]: ADDRS[h] for h in HOSTS})
        return lab_inv

    load = None
    watch = None
    haproxy = None
    with boot_network(tmp_path, home, lab_on_bridge) as net:
        g0, g = in_ns(net, home, plain), in_ns(net, home, hooked)
        try:
            # 1. v1 on both machines at once: the first reimage is the install.
            started = time.monotonic()
            rc, out, err = _reimage(g0, f"rollout@{rel['v1'].build_id}", [str(lab_inv)], "--canary", "0",
                                    "--wave-size", "2")
            assert rc == 0 and set(out["results"].values()) == {"done"}, f"{out}\n{err[-3000:]}\n{_serial_tails(home)}"
            print(f"v1 install, 2 machines at once: {time.monotonic() - started:.0f} s")

            # 2. haproxy in front of them, the load through it, the hooks' inventory.
            haproxy = start_haproxy(tmp_path / "haproxy", FRONT, {h: f"{ADDRS[h]}:80" for h in HOSTS},
                                    prefix=net.ns_exec(net.boot_ns))
            haproxy.wait_up(list(HOSTS), timeout=120)
            watch = StateWatch(haproxy.sock).start()
            load = Load.start(f"http://{FRONT}/", tmp_path / "load.jsonl", rate=25, max_seconds=3000,
                              prefix=net.ns_exec(net.boot_ns))
            load.wait_for(20)
            hooks_inv = hook_vars(tmp_path / "hooks.yml", haproxy.sock, {h: (ADDRS[h], 80) for h in HOSTS},
                                  verify_retries=3)
            inv = [str(lab_inv), str(hooks_inv)]
            dry = g.json("reimage", "lab", "--image", f"rollout@{rel['v2'].build_id}", "--dry-run",
                         "-i", inv[0], "-i", inv[1])
            assert dry["plan"]["hooks"]["groups"] == [
                {"key": "lab", "budget": 1, "size": 2, "members": list(HOSTS)}]

            # 3. v2 through the hooks, one host at a time: no request may fail.
            started = time.monotonic()
            rc, out, err = _reimage(g, f"rollout@{rel['v2'].build_id}", inv, "--canary", "1", "--wave-size", "1")
            assert rc == 0 and out["results"] == {h: "done" for h in HOSTS}, f"{out}\n{err[-3000:]}"
            print(f"v2 swap, one host at a time through the hooks: {time.monotonic() - started:.0f} s")
            steps = g.json("runs", "show", out["run_id"])["steps"]
            _check_swap(watch, steps, HOSTS)
            fleet = {h["name"]: h for h in g.json("fleet", "lab", *[a for i in inv for a in ("-i", i)])}
            assert {h: (fleet[h]["state"], fleet[h]["observed"]) for h in HOSTS} == {
                h: ("in-sync", rel["v2"].build_id) for h in HOSTS}, fleet

            # 4. v3 answers 500: the canary's verify fails, it is rolled back to v2, verified, returned.
            v3_started = time.time()
            rc, out, err = _reimage(g, f"rollout@{rel['v3'].build_id}", inv, "--canary", "1")
            assert rc == 1, f"{out}\n{err[-3000:]}"
            [canary] = [h for h, r in out["results"].items() if r == "rolled-back"]
            [other] = [h for h in HOSTS if h != canary]
            assert out["results"][other] == "not-started", out
            assert f"task '{VERIFY_TASK}' failed" in out["summary"] and "500" in out["summary"], out["summary"]
            steps3 = g.json("runs", "show", out["run_id"])["steps"]
            verify = [(s["attempt"], s["phase"]) for s in steps3 if s["host"] == canary and s["step"] == "verify"]
            assert verify == [(1, "intent"), (1, "failed"), (2, "intent"), (2, "done")], verify
            assert not [s for s in steps3 if s["host"] == other], steps3
            _check_swap(watch, steps3, (canary,))
            fleet = {h["name"]: h for h in g.json("fleet", "lab", *[a for i in inv for a in ("-i", i)])}
            assert {h: (fleet[h]["state"], fleet[h]["observed"]) for h in HOSTS} == {
                h: ("in-sync", rel["v2"].build_id) for h in HOSTS}, fleet
            haproxy.wait_up(list(HOSTS), timeout=30)
            print(f"v3 canary refused by its verify and swapped back: {time.time() - v3_started:.0f} s")
        finally:
            if load is not None:
                load.stop()
            if watch is not None:
                watch.stop()
            if haproxy is not None:
                haproxy.stop()
            g0.run("lab", "down", check=False)

        # 5. The service: every request answered 200, at >= 20 a second, never both backends out at once.
        sent, failed, rate = load.summary()
        first = load.results()[0]["t"]
        assert failed == [], (f"{len(failed)} failed, from +{failed[0]['t'] - first:.1f}s to "
                              f"+{failed[-1]['t'] - first:.1f}s: {failed[:3]}; haproxy states: "
                              + ", ".join(f"{n} {s} at +{at - first:.1f}s" for at, n, s in watch.changes)
                              + "\n" + haproxy.log.read_text()[-3000:]) if failed else None
        assert rate >= 20, (sent, rate)
        assert watch.most_out_at_once() == 1, watch.changes  # one out at a time, and someone was out
        order = _maintenance_order(haproxy.log.read_text())
        out_now: Counter[str] = Counter()
        for server, what in order:
            out_now[server] += 1 if what == "out" else -1
            assert sum(out_now.values()) <= 1, order
        expected = {h: 1 for h in HOSTS} | {canary: 2}  # v2: each host once; v3: the canary once more
        assert Counter(s for s, w in order if w == "out") == expected, order
        print(f"load: {sent} requests at {rate:.1f}/s, 0 failed; haproxy: {order}")
