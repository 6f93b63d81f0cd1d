"""Scale-out: N simulated hosts reimaged by one controller through two `golden serve` replicas on
PostgreSQL, against the same through one replica on SQLite (the embedded default).

    .venv/bin/python -m bench.scale_out [--nodes 10000] [--setups sqlite-1,postgresql-2]

Each setup gets a fresh home, a ``golden lab up --no-vm`` lab (real IPMI 2.0 on loopback UDP; each
machine fetches its script, the first MiB of each artifact and posts its report with its token)
and nginx rendered by ``golden pxe render`` in front of the replica(s), so both setups pay the
same proxy hop. PostgreSQL is a throwaway cluster with fsync and full-page writes on and
``synchronous_commit=off``; SQLite runs as golden runs it (WAL, synchronous=NORMAL): the same
guarantee (a crash may lose the last commits, never corrupts the database).

Measured per setup: wall time of ``golden reimage`` (canary 10, waves of 25%), controller CPU per
host, reports accepted per replica, the state database's size afterwards, and two report rates:

- during the reimage, the peak over any 10 s (paced by the controller's waves and the machines'
  boot time, so it says what a rollout asks of the replicas, not what they can take);
- a report storm after it: a script (with its token) fetched for each of --storm hosts, then all
  their reports posted at once by --storm-clients keep-alive connections through nginx. This is
  the replicas' capacity, and the number the 1.5x target is checked on.

Targets (issue 18): 10,000 hosts in under 10 minutes; two replicas take at least 1.5x the report
rate of one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    free_port,
    loadavg,
    machine,
    machine_line,
    ratio,
    render_table,
    run_measured,
    verdict,
    write_results,
)
from tests.fixtures.boot import make_build
from tests.fixtures.postgres import start_cluster, stop_cluster
from toolkit.lab.simboot import parse_boot_script
from toolkit.state.db import SQLiteStateDB
from toolkit.state.postgres import PostgresStateDB
from toolkit.store.artifacts import Store

GOLDEN = str(Path(sys.executable).with_name("golden"))
BUILD = "5ca1e0000000b001"
SIZES = {"vmlinuz": 8 << 20, "initrd": 40 << 20, "rootfs.squashfs": 64 << 20}
TARGET_WALL_S = 600.0
TARGET_REPORT_RATIO = 1.5
WINDOW_S = 10.0


def _env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOLDEN_")}
    return {**env, "GOLDEN_HOME": str(home), **extra}


def _golden(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([GOLDEN, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode:
        raise SystemExit(f"golden {' '.join(args)} exited {res.returncode}: {res.stderr[-2000:]}")
    return res


def _wait_listening(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited") from None
            time.sleep(0.2)
    raise SystemExit(f"{what} did not start listening")


def _accepted(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        m = re.search(rb'^golden_reports_total\{result="accepted"\} (\d+)', resp.read(), re.M)
    return int(m.group(1)) if m else 0


def _report_times(db: Any) -> list[float]:
    times: list[float] = []
    after = 0
    while True:
        with db.read() as repo:
            rows = repo.events_after(after, kinds=["report"], limit=5000)
        if not rows:
            return times
        times.extend(r.at for r in rows)
        after = rows[-1].id


def _peak_rate(times: list[float]) -> float:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > WINDOW_S:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / WINDOW_S


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0  # gone
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _cpu_split(replica_pids: list[int]) -> dict[str, float]:
    """CPU seconds so far of the processes a report passes through, by role."""
    by_comm: dict[str, float] = {"postgres": 0.0, "nginx": 0.0}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                comm = (d / "comm").read_text().strip()
            except OSError:
                continue
            if comm in by_comm:
                by_comm[comm] += _proc_cpu_s(int(d.name))
    return {"replicas": sum(_proc_cpu_s(p) for p in replica_pids), **by_comm,
            "bench clients": _proc_cpu_s(os.getpid())}


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    idle = vals[3] + vals[4]  # idle + iowait
    return sum(vals) - idle, sum(vals)


def _storm(hostport: str, macs: list[str], clients: int, replica_pids: list[int]) -> dict[str, Any]:
    """Fetch one script per MAC (untimed), then post every report at once; reports/s and failures,
    and where the machine's CPU went meanwhile (replicas, PostgreSQL, nginx, the bench's clients)."""
    host, port = hostport.split(":")

    def per_conn(chunk: list[str], work: Any) -> list[Any]:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            return [work(conn, item) for item in chunk]
        finally:
            conn.close()

    def script(conn: http.client.HTTPConnection, mac: str) -> dict[str, Any] | None:
        conn.request("GET", f"/boot/{mac}.ipxe")
        resp = conn.getresponse()
        parsed = parse_boot_script(resp.read().decode())
        if resp.status != 200 or parsed is None:
            return None
        p = parsed.params
        return {"mac": mac, "build_id": p.get("build", ""), "image": p.get("image", ""), "token": p.get("token", ""),
                "hostname": mac, "booted_at": "2026-12-02T00:00:00Z", "uptime_s": 60.0, "drift": [],
                "agent_version": "bench", "checks": {}}

    def report(conn: http.client.HTTPConnection, body: dict[str, Any]) -> int:
        conn.request("POST", "/report", body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status

    chunks = [macs[i::clients] for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        bodies = [b for got in pool.map(lambda c: per_conn(c, script), chunks) for b in got if b]
        body_chunks = [bodies[i::clients] for i in range(clients)]
        cpu0, busy0 = _cpu_split(replica_pids), _machine_busy()
        t0 = time.monotonic()
        codes = [c for got in pool.map(lambda c: per_conn(c, report), body_chunks) for c in got]
        took = time.monotonic() - t0
        cpu1, busy1 = _cpu_split(replica_pids), _machine_busy()
    ok = sum(1 for c in codes if c == 200)
    busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    return {"reports": len(codes), "accepted": ok, "seconds": round(took, 2),
            "reports_per_s": round(ok / took, 1) if took else None, "scripts_missing": len(macs) - len(bodies),
            "machine_busy_pct": round(100 * busy, 1),
            # a process that exited meanwhile (another PostgreSQL's backend) takes its seconds with it
            "cpu_ms_per_report": {k: round(max(0.0, 1000 * (cpu1[k] - cpu0[k]) / max(1, ok)), 2) for k in cpu0}}


def one_setup(nodes: int, setup: str, storm: int, storm_clients: int) -> dict[str, Any]:
    backend, replicas_n = setup.split("-")
    root = Path(tempfile.mkdtemp(prefix=f"golden-bench-scale-{setup}-"))
    cluster = start_cluster(durable=True) if backend == "postgresql" else None
    shared = {"GOLDEN_STORE": str(root / "store")}
    if cluster is not None:
        shared["GOLDEN_STATE_URL"] = cluster.url("golden")
    make_build(Store(root / "store"), "web", BUILD, sizes=SIZES)
    controller = _env(root / "controller", shared)
    procs: list[subprocess.Popen] = []
    out: dict[str, Any] = {"setup": setup, "nodes": nodes, "backend": backend, "replicas": int(replicas_n)}
    try:
        nginx_port = free_port()
        boot_url = f"http://127.0.0.1:{nginx_port}"
        _golden(controller, "lab", "up", "--nodes", str(nodes), "--no-vm", "--boot-url", boot_url)
        inventory = root / "controller" / "lab" / "inventory.yaml"
        urls = []
        for i in range(int(replicas_n)):
            port = free_port()
            # SQLite is one file on one machine: its single replica shares the controller's home
            home = root / ("controller" if cluster is None else f"replica-{i}")
            p = subprocess.Popen([GOLDEN, "serve", "--listen", f"127.0.0.1:{port}", "-i", str(inventory)],
                                 env=_env(home, shared), stdout=subprocess.DEVNULL,
                                 stderr=open(root / f"replica-{i}.log", "ab"), start_new_session=True)
            procs.append(p)
            urls.append(f"http://127.0.0.1:{port}")
            _wait_listening(f"{urls[-1]}/metrics", p, f"replica {i}")
        ups = [a for u in urls for a in ("--upstream", u.removeprefix("http://"))]
        _golden(_env(root / "render", shared), "pxe", "render", "--out", str(root / "nginx"), "--server-url", boot_url,
                "--interface", "lo", "--subnet", "127.0.0.0", "--listen", f"127.0.0.1:{nginx_port}",
                "--nginx-user", "root", *ups)
        nginx = subprocess.Popen(["nginx", "-c", str(root / "nginx" / "nginx.conf"), "-g", "daemon off;"],
                                 start_new_session=True)
        procs.append(nginx)
        _wait_listening(f"{boot_url}/metrics", nginx, "nginx")
        ours = run_measured([GOLDEN, "--json", "reimage", "lab", "--image", f"web@{BUILD}", "--canary", "10",
                             "--wave-size", "25%", "--max-failures", "1%", "--boot-timeout", "600",
                             "--contest-window", "2", "--yes", "-i", str(inventory)], timeout=3600, env=controller)
        result = json.loads(ours.stdout or "{}")
        done = sum(1 for r in result.get("results", {}).values() if r == "done")
        macs = [h["mac"] for h in json.loads(_golden(controller, "--json", "fleet", "-i", str(inventory)).stdout)]
        storm_result = _storm(f"127.0.0.1:{nginx_port}", macs[:storm], storm_clients,
                              [p.pid for p in procs if p is not nginx])
        accepted = [_accepted(u) for u in urls]
        db = PostgresStateDB(shared["GOLDEN_STATE_URL"]) if cluster else SQLiteStateDB(root / "controller" / "state.db")
        try:
            times = _report_times(db)
            size = db.size_bytes()
        finally:
            db.close()
        out.update({"wall_s": round(ours.wall_s, 1), "cpu_s": round(ours.cpu_s, 1), "hosts_done": done,
                    "rc": ours.rc, "status": result.get("status"), "summary": result.get("summary", ""),
                    "cpu_ms_per_host": round(1000 * ours.cpu_s / nodes, 2), "accepted_per_replica": accepted,
                    "peak_reports_per_s": round(_peak_rate(times), 1), "reports": len(times),
                    "db_mib": round(size / 2**20, 1), "storm": storm_result,
                    "stderr_tail": ours.stderr[-1500:] if ours.rc else ""})
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([GOLDEN, "lab", "down"], env=controller, capture_output=True, check=False)
        if cluster is not None:
            stop_cluster(cluster)
        shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10000)
    parser.add_argument("--setups", default="sqlite-1,postgresql-1,postgresql-2",
                        help="BACKEND-REPLICAS, comma-separated; the first is the baseline")
    parser.add_argument("--storm", type=int, default=3000, help="hosts in the report storm (default 3000)")
    parser.add_argument("--storm-clients", type=int, default=64)
    args = parser.parse_args()
    m, load0 = machine(), loadavg()
    results = [one_setup(args.nodes, s, min(args.storm, args.nodes), args.storm_clients)
               for s in args.setups.split(",")]
    base = results[0]
    rows = [[r["setup"], r["hosts_done"], r["wall_s"], r["cpu_ms_per_host"], r["peak_reports_per_s"],
             r["storm"]["reports_per_s"], ratio(r["storm"]["reports_per_s"], base["storm"]["reports_per_s"]),
             "/".join(map(str, r["accepted_per_replica"])), r["db_mib"]] for r in results]
    print(f"scale-out: {args.nodes} simulated hosts, one controller, replicas behind nginx")
    print(machine_line(m, load0, loadavg()))
    print(render_table(["setup", "hosts done", "wall s", "CPU ms/host", "rollout peak reports/s",
                        "storm reports/s", "storm vs " + base["setup"], "accepted per replica", "DB MiB"], rows))
    pg = max((r for r in results if r["backend"] == "postgresql"), key=lambda r: r["replicas"], default=None)
    verdicts = {}
    if pg:
        met_wall = pg["hosts_done"] == args.nodes and pg["wall_s"] < TARGET_WALL_S
        verdicts["wall"] = met_wall
        print(f"target: {args.nodes} hosts in under {TARGET_WALL_S / 60:g} minutes on PostgreSQL with "
              f"{pg['replicas']} replicas: {verdict(met_wall)} ({pg['wall_s']} s, {pg['hosts_done']} done)")
        # "two replicas serve at least 1.5x the report rate of one": judged against the named peer
        # (one SQLite replica, the embedded default) and against one PostgreSQL replica (scaling out)
        ones = [r for r in results if r is not pg and r["replicas"] == 1]
        for one in ones:
            r = ratio(pg["storm"]["reports_per_s"], one["storm"]["reports_per_s"])
            met_rate = r is not None and r >= TARGET_REPORT_RATIO and pg["storm"]["accepted"] == pg["storm"]["reports"]
            verdicts[f"report_rate_vs_{one['setup']}"] = met_rate
            print(f"target: {pg['setup']} takes >= {TARGET_REPORT_RATIO}x the report rate of {one['setup']} (storm "
                  f"of {pg['storm']['reports']}): {verdict(met_rate)} ({r}x)")
    print("report storm: machine busy and CPU per accepted report, by process")
    roles = ["replicas", "postgres", "nginx", "bench clients"]
    print(render_table(["setup", "machine busy %", *[f"{k} ms" for k in roles]],
                       [[r["setup"], r["storm"]["machine_busy_pct"],
                         *[r["storm"]["cpu_ms_per_report"][k] for k in roles]] for r in results]))
    path = write_results("scale_out", {"machine": m, "load_start": load0, "load_end": loadavg(),
                                       "nodes": args.nodes, "results": results, "met": verdicts})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
