"""Slowloris: 500 hostile connections while 50 machines fetch their boot script and artifacts.

    .venv/bin/python -m bench.slowloris [--idle 500] [--clients 50] [--rounds 4] [--hold 12] [--before COMMIT]

Four runs on loopback, same files: ``golden serve`` alone and under the slowloris, and nginx as
rendered by ``golden pxe render`` (artifacts from disk, /boot/ proxied to its own golden serve)
alone and under the same slowloris. The slowloris holds ``--idle`` connections open for the
whole run: half connect and send nothing, half send a partial request head and trickle one
header line every few seconds; a connection the server closes is reopened at once. Each client
is one curl process fetching ``/boot/<mac>.ipxe``, kernel and initrd ``--rounds`` times over one
keep-alive connection; curl's own per-transfer timing gives the /boot latencies. Threads and
memory of the server process are sampled during each run. ``--before COMMIT`` adds the same two
runs against ``golden serve`` as it was at that commit (its toolkit exported with ``git archive``).

Results go to bench/results/slowloris-<timestamp>.json. Bounded: every run ends when its clients
do (curl --max-time), the slowloris stops with its run, and the whole bench is under ~3 minutes.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.boot_storm import GOLDEN, server_cpu, synthetic_build, tree_pids, wait_http, write_inventory
from bench.common import (
    ROOT,
    free_port,
    loadavg,
    machine,
    machine_line,
    percentile,
    ratio,
    render_table,
    stop_processes,
    verdict,
    write_results,
)

SIZES = {"vmlinuz": 8 << 20, "initrd": 24 << 20, "rootfs.squashfs": 1 << 20}
FETCHED = ("vmlinuz", "initrd")
TARGET_P99_S = 1.0
TRICKLE_EVERY_S = 3.0
SETTLE_S = 3.0


class Slowloris:
    """``n`` connections held open against ``addr`` until stopped: half silent, half trickling a request head."""

    def __init__(self, addr: tuple[str, int], n: int) -> None:
        self.addr = addr
        self.n = n
        self.reopened = 0
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def open_count(self) -> int:
        return len(self._sel.get_map())

    def start(self) -> None:
        for i in range(self.n):
            self._open(trickle=bool(i % 2))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]

    def _open(self, trickle: bool) -> None:
        try:
            s = socket.create_connection(self.addr, timeout=5)
        except OSError:
            return
        s.setblocking(False)
        if trickle:
            try:
                s.send(b"GET /boot/52:54:00:00:00:00.ipxe HTTP/1.1\r\nHost: slow\r\n")
            except OSError:
                s.close()
                return
        self._sel.register(s, selectors.EVENT_READ, trickle)

    def _run(self) -> None:
        last_trickle = time.monotonic()
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.5):
                self._drop(key)  # the server answered or closed: reopen
            if time.monotonic() - last_trickle >= TRICKLE_EVERY_S:
                last_trickle = time.monotonic()
                for key in list(self._sel.get_map().values()):
                    if key.data:
                        try:
                            key.fileobj.send(b"X-Slow: 1\r\n")  # type: ignore[union-attr]
                        except OSError:
                            self._drop(key)
            while self.open_count() < self.n and not self._stop.is_set():
                self.reopened += 1
                self._open(trickle=self.reopened % 2 == 1)

    def _drop(self, key: selectors.SelectorKey) -> None:
        try:
            self._sel.unregister(key.fileobj)
        except (KeyError, ValueError):
            pass
        key.fileobj.close()  # type: ignore[union-attr]


def sample_process(pids: list[int], stop: threading.Event, out: dict[str, int]) -> None:
    """Peak threads and RSS (summed over ``pids``) until ``stop``."""
    while not stop.is_set():
        threads = rss = 0
        for p in pids:
            try:
                for ln in Path(f"/proc/{p}/status").read_text().splitlines():
                    if ln.startswith("Threads:"):
                        threads += int(ln.split()[1])
                    elif ln.startswith("VmRSS:"):
                        rss += int(ln.split()[1]) * 1024
            except OSError:
                pass
        out["threads"] = max(out.get("threads", 0), threads)
        out["rss"] = max(out.get("rss", 0), rss)
        stop.wait(0.2)


def clients(base: str, image: str, build_id: str, macs: list[str], rounds: int) -> dict[str, Any]:
    """Every client at once: /boot then the artifacts, ``rounds`` times on one connection; timings from curl."""
    t0 = time.monotonic()
    procs = []
    for mac in macs:
        argv = ["curl", "-s", "--max-time", "120", "-w",
                "%{http_code} %{size_download} %{time_total} %{url_effective}\n"]
        for _ in range(rounds):
            for url in [f"{base}/boot/{mac}.ipxe"] + [f"{base}/store/{image}/{build_id}/{a}" for a in FETCHED]:
                argv += ["-o", "/dev/null", url]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    outs = [p.communicate()[0] for p in procs]
    wall = time.monotonic() - t0
    boot, nbytes, errors = [], 0, 0
    for out in outs:
        for line in out.splitlines():
            code, size, total, url = line.split(" ", 3)
            nbytes += int(size)
            errors += code != "200"
            if "/boot/" in url:
                boot.append(float(total))
    expected = len(macs) * rounds * (1 + len(FETCHED))
    errors += expected - sum(len(o.splitlines()) for o in outs)
    return {"wall_s": round(wall, 2), "bytes": nbytes, "throughput_mb_s": round(nbytes / 1e6 / wall, 1),
            "boot_requests": len(boot), "boot_p50_s": round(percentile(boot, 50) or 0, 4),
            "boot_p99_s": round(percentile(boot, 99) or 0, 4), "boot_max_s": round(max(boot, default=0), 4),
            "errors": errors}


def one_run(name: str, base: str, pids: list[int], idle: int, hold_s: float, args: argparse.Namespace,
            image: str, build_id: str, macs: list[str]) -> dict[str, Any]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    loris = Slowloris((host, int(port)), idle) if idle else None
    peak: dict[str, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_process, args=(pids, stop, peak), daemon=True)
    time.sleep(SETTLE_S)  # every run starts from the same quiet: the previous run's curl processes are gone
    cpu0 = server_cpu(pids)
    sampler.start()
    if loris:
        loris.start()
        time.sleep(hold_s)  # the hostile connections settle (and, for golden, live through a header timeout)
    held = loris.open_count() if loris else 0
    r = clients(base, image, build_id, macs, args.rounds)
    if loris:
        held = min(held, loris.open_count())
        loris.stop()
    stop.set()
    sampler.join()
    r.update(server=name, idle=idle, idle_held=held, reopened=loris.reopened if loris else 0,
             server_threads=peak.get("threads"), server_rss_mb=round(peak.get("rss", 0) / 2**20, 1),
             server_cpu_s=round(server_cpu(pids) - cpu0, 2), load=loadavg()[0])
    print(f"  {name}, {idle} slow connections: /boot p99 {r['boot_p99_s']} s, {r['throughput_mb_s']} MB/s, "
          f"{r['errors']} errors, {r['server_threads']} threads", flush=True)
    return r


def start_servers(tmp: Path, args: argparse.Namespace) -> tuple[dict[str, tuple[str, list[int]]], list[Any], Any]:
    home = tmp / "home"
    store_dir = home / "store"
    store_dir.mkdir(parents=True)
    build_id = synthetic_build(store_dir, sizes=SIZES)  # small artifacts: this measures the server, not the disk
    macs = write_inventory(tmp / "inventory.yaml", "bench", build_id, args.clients)
    env = {**os.environ, "GOLDEN_HOME": str(home), "GOLDEN_PROJECT": str(ROOT)}
    env.pop("GOLDEN_INVENTORY", None)
    procs: list[subprocess.Popen[Any]] = []
    ports = {}
    roles = {"golden": (GOLDEN,), "upstream": (GOLDEN,)}
    if args.before:
        (tmp / "before").mkdir()
        subprocess.run(f"git archive {args.before} toolkit | tar -x -C {tmp / 'before'}", shell=True, check=True,
                       cwd=ROOT)
        roles["before"] = (sys.executable, "-c", "import sys; from toolkit.cli import main; sys.exit(main())")
    for role, argv0 in roles.items():
        ports[role] = free_port()
        renv = {**env, "PYTHONPATH": str(tmp / "before")} if role == "before" else env
        p = subprocess.Popen([*argv0, "serve", "--listen", f"127.0.0.1:{ports[role]}",
                              "-i", str(tmp / "inventory.yaml")], env=renv, cwd=tmp if role == "before" else ROOT,
                             stdout=subprocess.DEVNULL, stderr=open(tmp / f"{role}.log", "wb"))
        procs.append(p)
        wait_http(f"http://127.0.0.1:{ports[role]}/healthz")
    nport = free_port()
    render = subprocess.run([GOLDEN, "pxe", "render", "--out", str(tmp / "pxe"), "--server-url",
                             f"http://127.0.0.1:{nport}", "--interface", "lo", "--subnet", "127.0.0.0",
                             "--listen", f"127.0.0.1:{nport}", "--upstream", f"127.0.0.1:{ports['upstream']}",
                             "--nginx-user", "root", "--store", str(store_dir)],
                            env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if render.returncode != 0:
        raise SystemExit(f"golden pxe render failed: {render.stderr.strip()}")
    nginx = subprocess.Popen(["nginx", "-c", str(tmp / "pxe" / "nginx.conf"), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(nginx)
    wait_http(f"http://127.0.0.1:{nport}/store/bench/{build_id}/vmlinuz")
    servers = {"golden serve": (f"http://127.0.0.1:{ports['golden']}", [procs[0].pid]),
               "nginx (golden pxe render)": (f"http://127.0.0.1:{nport}", tree_pids(nginx.pid))}
    if args.before:
        servers[f"golden serve at {args.before}"] = (f"http://127.0.0.1:{ports['before']}", [procs[2].pid])
    return servers, procs, (build_id, macs)


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    g = next(r for r in rows if r["server"] == "golden serve" and r["idle"])
    return [{"target": f"golden serve: p99 of /boot under {TARGET_P99_S:g} s during the slowloris",
             "value": f"{g['boot_p99_s']} s ({g['idle_held']} slow connections held, {g['errors']} errors)",
             "met": g["boot_p99_s"] < TARGET_P99_S and g["errors"] == 0 and g["idle_held"] >= 0.9 * g["idle"]}]


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    rows = result["rows"]
    print()
    print(f"Slowloris: {args.clients} curl clients x {args.rounds} rounds of /boot + kernel + initrd "
          f"({sum(SIZES[a] for a in FETCHED) >> 20} MB), with and without {args.idle} slow connections")
    print(machine_line(result["machine"], result["load_start"], result["load_end"]))
    headers = ("SERVER", "SLOW CONNS", "HELD", "/BOOT P50 S", "P99 S", "MAX S", "P99 VS QUIET", "MB/S",
               "MB/S VS QUIET", "VS NGINX", "THREADS", "RSS MB", "CPU S", "ERRORS", "LOAD")
    table = []
    for r in rows:
        quiet = next(x for x in rows if x["server"] == r["server"] and not x["idle"])
        ng = next(x for x in rows if x["server"].startswith("nginx") and x["idle"] == r["idle"])
        rel = ratio(r["throughput_mb_s"], ng["throughput_mb_s"])
        table.append((r["server"], r["idle"], r["idle_held"], r["boot_p50_s"], r["boot_p99_s"], r["boot_max_s"],
                      ratio(r["boot_p99_s"], quiet["boot_p99_s"]), r["throughput_mb_s"],
                      ratio(r["throughput_mb_s"], quiet["throughput_mb_s"]),
                      None if rel is None else round(rel, 2), r["server_threads"], r["server_rss_mb"],
                      r["server_cpu_s"], r["errors"], r["load"]))
    print(render_table(headers, table))
    print()
    print(render_table(("TARGET", "VALUE", "RESULT"),
                       [(t["target"], t["value"], verdict(t["met"])) for t in result["targets"]]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle", type=int, default=500, help="slow connections held open (default 500)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=4, help="/boot + kernel + initrd per client (default 4)")
    ap.add_argument("--hold", type=float, default=12.0, help="seconds the slowloris runs before the clients start")
    ap.add_argument("--before", metavar="COMMIT", help="also run golden serve as it was at this commit")
    args = ap.parse_args()
    if not shutil.which("nginx") or not shutil.which("curl"):
        raise SystemExit("needs nginx and curl (apt-get install -y nginx curl)")
    started, load_start = time.monotonic(), loadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="golden-slowloris-") as tmp:
        servers, procs, (build_id, macs) = start_servers(Path(tmp), args)
        try:
            for name, (base, pids) in servers.items():
                clients(base, "bench", build_id, macs[:1], 1)  # warm-up: page cache, workers
                for idle in (0, args.idle):
                    rows.append(one_run(name, base, pids, idle, args.hold, args, "bench", build_id, macs))
        finally:
            stop_processes(procs)
        tracebacks = {log.stem: log.read_text(errors="replace").count("Traceback") for log in Path(tmp).glob("*.log")}
    result: dict[str, Any] = {"benchmark": "slowloris", "machine": machine(), "load_start": load_start,
                              "load_end": loadavg(), "artifact_bytes": SIZES, "args": vars(args),
                              "seconds": round(time.monotonic() - started, 1), "rows": rows,
                              "tracebacks_in_server_stderr": tracebacks}
    result["targets"] = targets(rows)
    report(result, args)
    print(f"tracebacks on the servers' stderr: {tracebacks}")
    print(f"wrote {write_results('slowloris', result)} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
