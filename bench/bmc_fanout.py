"""Time `golden power all status` over N simulated BMCs, against ipmitool via xargs -P as the peer.

    .venv/bin/python bench/bmc_fanout.py [--nodes 500 1000] [--concurrency 32] [--drop-rate 0.05]

Each size gets its own --no-vm lab in a throwaway home. The peer runs one `ipmitool -I lanplus
power status` per BMC at the same concurrency (password from a 0600 file, never argv).
Results go to bench/results/bmc_fanout-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = str(Path(sys.executable).parent / "golden")


def golden(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GOLDEN, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False)


def run_size(nodes: int, concurrency: int, drop: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="golden-bench-") as tmp:
        env = {**os.environ, "GOLDEN_HOME": tmp, "GOLDEN_PROJECT": str(ROOT)}
        env.pop("GOLDEN_INVENTORY", None)
        up_args = ["lab", "up", "--nodes", str(nodes), "--no-vm"]
        if drop:
            up_args += ["--drop-rate", str(drop), "--seed", "1"]
        t0 = time.monotonic()
        proc = golden(env, *up_args)
        lab_up = time.monotonic() - t0
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        try:
            t0 = time.monotonic()
            out = golden(env, "--json", "power", "all", "status", "--workers", str(concurrency))
            ours = time.monotonic() - t0
            report = json.loads(out.stdout)
            ours_ok = sum(r["ok"] for r in report["results"])
            lab = json.loads((Path(tmp) / "lab" / "lab.json").read_text())
            pwfile = Path(tmp) / "pw"
            pwfile.write_text(lab["password"])
            pwfile.chmod(0o600)
            ports = "\n".join(str(n["bmc_port"]) for n in lab["nodes"]) + "\n"
            cmd = (f"xargs -P {concurrency} -I PORT sh -c 'ipmitool -I lanplus -H 127.0.0.1 -p PORT -U admin "
                   f"-f {pwfile} -R 4 -N 1 power status >/dev/null 2>&1 && echo ok || echo fail'")
            t0 = time.monotonic()
            peer = subprocess.run(["sh", "-c", cmd], input=ports, capture_output=True, text=True, check=False)
            peer_s = time.monotonic() - t0
            peer_ok = peer.stdout.split().count("ok")
        finally:
            t0 = time.monotonic()
            golden(env, "lab", "down")
            lab_down = time.monotonic() - t0
    return {"nodes": nodes, "concurrency": concurrency, "drop_rate": drop,
            "golden_s": round(ours, 2), "golden_ok": ours_ok, "golden_internal_s": report["seconds"],
            "ipmitool_xargs_s": round(peer_s, 2), "ipmitool_ok": peer_ok,
            "ratio_golden_over_ipmitool": round(ours / peer_s, 3) if peer_s else None,
            "lab_up_s": round(lab_up, 2), "lab_down_s": round(lab_down, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, nargs="+", default=[500, 1000])
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--drop-rate", type=float, default=0.0)
    args = ap.parse_args()
    rows = [run_size(n, args.concurrency, args.drop_rate) for n in args.nodes]
    for r in rows:
        print(f"{r['nodes']:>5} BMCs  golden {r['golden_s']:6.2f}s ({r['golden_ok']} ok)  "
              f"ipmitool|xargs -P{r['concurrency']} {r['ipmitool_xargs_s']:6.2f}s ({r['ipmitool_ok']} ok)  "
              f"ratio {r['ratio_golden_over_ipmitool']}  lab up {r['lab_up_s']}s down {r['lab_down_s']}s")
    out = ROOT / "bench" / "results" / f"bmc_fanout-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "bmc_fanout", "host_cpus": os.cpu_count(), "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
