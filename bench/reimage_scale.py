"""Reimage at scale: wall time and controller CPU per host for `golden reimage` on --no-vm labs.

    .venv/bin/python bench/reimage_scale.py [--nodes 100,1000]

Each size gets a fresh simulated lab whose machines netboot through a real `golden serve` (script,
first MiB of each artifact, agent report with its token). Two contenders on the same lab:

- ``golden reimage`` (ours): canary 10, waves of 25%, journal, report wait, health gate;
- peer ``bootdev+power fan-out``: `golden bootdev lab pxe` then `golden power lab cycle`, the same BMC
  work with no journal, no waiting for reports and no gates, i.e. the floor a controller can reach.

The ratio says what the safety machinery costs on top of raw BMC work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import free_port, loadavg, machine, machine_line, ratio, render_table, run_measured, write_results
from tests.fixtures.boot import make_build
from toolkit.store.artifacts import Store

GOLDEN = str(Path(sys.executable).with_name("golden"))
BUILD = "be0c0000000000a1"
SIZES = {"vmlinuz": 8 << 20, "initrd": 40 << 20, "rootfs.squashfs": 64 << 20}


def _golden(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOLDEN_HOME": str(home)}
    return subprocess.run([GOLDEN, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def one_size(nodes: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"golden-bench-reimage-{nodes}-"))
    make_build(Store(home / "store"), "web", BUILD, sizes=SIZES)
    port = free_port()
    env = {**os.environ, "GOLDEN_HOME": str(home)}
    serve = subprocess.Popen([GOLDEN, "serve", "--listen", f"127.0.0.1:{port}", "-i",
                              str(home / "lab" / "inventory.yaml")], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    out: dict[str, Any] = {"nodes": nodes}
    try:
        up = _golden(home, "lab", "up", "--nodes", str(nodes), "--no-vm", "--boot-url", f"http://127.0.0.1:{port}")
        if up.returncode:
            raise SystemExit(up.stderr)
        inv = ["-i", str(home / "lab" / "inventory.yaml")]
        ours = run_measured([GOLDEN, "--json", "reimage", "lab", "--image", f"web@{BUILD}", "--canary", "10",
                             "--wave-size", "25%", "--max-failures", "1%", "--boot-timeout", "120",
                             "--contest-window", "2", "--yes", *inv],
                            timeout=900, env=env)
        result = json.loads(ours.stdout or "{}")
        done = sum(1 for r in result.get("results", {}).values() if r == "done")
        t0 = time.monotonic()
        boot = run_measured([GOLDEN, "--json", "bootdev", "lab", "pxe", *inv], timeout=900, env=env)
        power = run_measured([GOLDEN, "--json", "power", "lab", "cycle", *inv], timeout=900, env=env)
        peer_wall = time.monotonic() - t0
        peer_ok = sum(1 for r in json.loads(power.stdout or '{"results": []}')["results"] if r.get("ok"))
        out.update({
            "ours": {"wall_s": round(ours.wall_s, 2), "cpu_s": round(ours.cpu_s, 2), "hosts_done": done,
                     "cpu_ms_per_host": round(1000 * ours.cpu_s / nodes, 2), "rc": ours.rc,
                     "peak_rss_mib": round(ours.peak_rss_bytes / 2**20, 1)},
            "peer": {"wall_s": round(peer_wall, 2), "cpu_s": round(boot.cpu_s + power.cpu_s, 2),
                     "hosts_ok": peer_ok, "cpu_ms_per_host": round(1000 * (boot.cpu_s + power.cpu_s) / nodes, 2)},
        })
    finally:
        serve.terminate()
        serve.wait(10)
        _golden(home, "lab", "down")
        shutil.rmtree(home, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="100,1000")
    args = parser.parse_args()
    m, load0 = machine(), loadavg()
    rows, results = [], []
    for n in (int(x) for x in args.nodes.split(",")):
        r = one_size(n)
        results.append(r)
        o, p = r["ours"], r["peer"]
        rows.append([n, "golden reimage", o["wall_s"], o["cpu_s"], o["cpu_ms_per_host"], o["hosts_done"],
                     ratio(o["wall_s"], p["wall_s"])])
        rows.append([n, "peer: bootdev+power fan-out", p["wall_s"], p["cpu_s"], p["cpu_ms_per_host"], p["hosts_ok"],
                     1.0])
    print("reimage at scale: golden reimage vs the raw BMC fan-out it is built on")
    print(machine_line(m, load0, loadavg()))
    print(render_table(["hosts", "contender", "wall s", "CPU s", "CPU ms/host", "hosts ok", "wall ratio"], rows))
    big = next((r for r in results if r["nodes"] == 1000), None)
    if big:
        met = big["ours"]["hosts_done"] == 1000 and big["ours"]["wall_s"] < 60
        print(f"target: 1,000 hosts reimaged (report + gate) in under 60 s: {'MET' if met else 'NOT MET'}")
    path = write_results("reimage_scale", {"machine": m, "load_start": load0, "load_end": loadavg(),
                                           "results": results})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
