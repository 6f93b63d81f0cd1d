"""Boot storm: C machines at once fetch their iPXE script, kernel, initrd and squashfs.

    .venv/bin/python -m bench.boot_storm [--clients 1 10 50] [--repeat 3] [--store DIR] [--synthetic]

Two servers, same files, same run: ``golden serve`` alone, and a real nginx configured by
``golden pxe render`` (artifacts from disk with sendfile; /boot/ proxied to golden serve, as in
production). Each client is one curl process fetching the four URLs over one keep-alive
connection, output to /dev/null, so the client side does no Python work. Server CPU comes from
/proc/<pid>/stat of the server processes (nginx: master and workers).

The build is the newest real baked build under ~/.cache/golden-tests/bake-home/store (used
read-only: hard-linked into a throwaway home) or, if there is none or with --synthetic, a
synthetic build of realistic sizes written through the Store API into the throwaway home.
Results go to bench/results/boot_storm-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    free_port,
    loadavg,
    machine,
    machine_line,
    percentile,
    proc_cpu_seconds,
    ratio,
    render_table,
    stop_processes,
    verdict,
    write_results,
)

GOLDEN = str(Path(sys.executable).parent / "golden")
FIXTURE_STORE = Path.home() / ".cache" / "golden-tests" / "bake-home" / "store"
ARTIFACTS = ("vmlinuz", "initrd", "rootfs.squashfs")
SYNTHETIC_SIZES = {"vmlinuz": 8 << 20, "initrd": 42 << 20, "rootfs.squashfs": 300 << 20}
TARGET_RATIO = 2.0  # golden serve throughput within 2x of nginx at the largest C



def newest_build(store_dir: Path) -> tuple[str, Path] | None:
    from toolkit.store.artifacts import Store

    if not store_dir.is_dir():
        return None
    store = Store(store_dir)
    builds = [b for image in store.images() for b in store.builds(image)]
    builds = [b for b in builds if all(b.artifact(a).is_file() for a in ARTIFACTS)]
    if not builds:
        return None
    best = max(builds, key=lambda b: b.manifest.created_at)
    return best.image, best.path


def link_build(src: Path, store_dir: Path, image: str) -> str:
    """Hard-link a build into our store: no copy, and nothing of the source is ever written."""
    target = store_dir / image / src.name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(src, target, copy_function=os.link, ignore=shutil.ignore_patterns("logs"))
    except OSError:  # another filesystem: copy instead
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(src, target, ignore=shutil.ignore_patterns("logs"))
    return src.name


def synthetic_build(store_dir: Path, image: str = "bench", sizes: dict[str, int] | None = None) -> str:
    from toolkit.image.manifest import Artifact, Manifest
    from toolkit.store.artifacts import Store

    store = Store(store_dir)
    staged = store.stage(image)
    arts = {}
    block = os.urandom(1 << 20)  # incompressible, like a squashfs
    for name, size in (sizes or SYNTHETIC_SIZES).items():
        h = hashlib.sha256()
        with open(staged / name, "wb") as f:
            for i in range(size >> 20):
                chunk = bytes([i & 0xFF]) + block[1:]
                f.write(chunk)
                h.update(chunk)
        arts[name] = Artifact(sha256=h.hexdigest(), size=size)
    build_id = hashlib.sha256(b"".join(a.sha256.encode() for a in arts.values())).hexdigest()[:16]
    Manifest(image=image, build_id=build_id, created_at=datetime.now(UTC).isoformat(), spec={}, inputs={},
             artifacts=arts, packages={}, roles={}, tool_versions={}, dib_env={}, bake_seconds=0.0,
             checks={}).write(staged / "manifest.json")
    store.commit(image, build_id, staged)
    return build_id


def write_inventory(path: Path, image: str, build_id: str, clients: int) -> list[str]:
    import yaml

    macs = [f"52:54:be:00:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(clients)]
    hosts = {f"storm-{i:03d}": {"mac": mac, "image": f"{image}@{build_id}"} for i, mac in enumerate(macs)}
    path.write_text(yaml.safe_dump({"all": {"children": {"storm": {"hosts": hosts}}}}))
    return macs


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True,
                           text=True, check=False)
        if r.stdout.strip() in ("200", "404"):
            return
        time.sleep(0.2)
    raise SystemExit(f"server at {url} did not answer within {timeout:g} s")


def tree_pids(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                ppid = int(Path(f"/proc/{e.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(e.name))
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, ()))
    return out


def server_cpu(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            total += proc_cpu_seconds(p)
        except OSError:
            pass
    return total


def storm(base: str, image: str, build_id: str, macs: list[str], server_pids: list[int]) -> dict[str, Any]:
    """C curl clients at once; per-client finish times, bytes, errors, server CPU."""
    clients = []
    start_cpu = server_cpu(server_pids)
    t0 = time.monotonic()
    finish: list[float] = [0.0] * len(macs)
    for mac in macs:
        argv = ["curl", "-s", "-w", "%{http_code} %{size_download}\n"]
        for url in [f"{base}/boot/{mac}.ipxe"] + [f"{base}/store/{image}/{build_id}/{a}" for a in ARTIFACTS]:
            argv += ["-o", "/dev/null", url]
        clients.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))

    outs: list[str] = [""] * len(macs)

    def reap(i: int, p: subprocess.Popen[str]) -> None:
        outs[i] = p.communicate()[0]
        finish[i] = time.monotonic() - t0

    threads = [threading.Thread(target=reap, args=(i, p)) for i, p in enumerate(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.monotonic() - t0
    cpu = server_cpu(server_pids) - start_cpu
    nbytes, errors = 0, 0
    for out in outs:
        lines = out.split()
        codes, sizes = lines[0::2], lines[1::2]
        if len(codes) != 4 or any(c != "200" for c in codes):
            errors += 1
        nbytes += sum(int(s) for s in sizes)
    gb = nbytes / 1e9
    return {"clients": len(macs), "wall_s": round(wall, 2), "bytes": nbytes,
            "throughput_mb_s": round(nbytes / 1e6 / wall, 1), "client_errors": errors,
            "finish_min_s": round(min(finish), 2), "finish_p50_s": round(percentile(finish, 50) or 0, 2),
            "finish_max_s": round(max(finish), 2), "finish_spread_s": round(max(finish) - min(finish), 2),
            "server_cpu_s": round(cpu, 2), "cpu_s_per_gb": round(cpu / gb, 2) if gb else None}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (an actual run, so its numbers stay consistent)."""
    return dict(sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--store", type=Path, default=FIXTURE_STORE, help="store to take the newest build from")
    ap.add_argument("--repeat", type=int, default=3, help="runs per (C, server); the median-wall run is reported")
    ap.add_argument("--synthetic", action="store_true", help="use a synthetic build even if a real one exists")
    args = ap.parse_args()
    if not shutil.which("nginx") or not shutil.which("curl"):
        raise SystemExit("needs nginx and curl (apt-get install -y nginx curl)")
    started, load_start = time.monotonic(), loadavg()
    procs: list[subprocess.Popen[Any]] = []
    with tempfile.TemporaryDirectory(prefix="golden-storm-") as tmp:
        home = Path(tmp) / "home"
        store_dir = home / "store"
        store_dir.mkdir(parents=True)
        found = None if args.synthetic else newest_build(args.store)
        if found:
            image, src = found
            build_id = link_build(src, store_dir, image)
            source = f"real build {image}/{build_id} from {args.store}"
        else:
            image, build_id = "bench", synthetic_build(store_dir)
            source = f"synthetic build {image}/{build_id} (sizes {SYNTHETIC_SIZES})"
        sizes = {a: (store_dir / image / build_id / a).stat().st_size for a in ARTIFACTS}
        print(f"build: {source}; {sum(sizes.values()) / 1e6:.0f} MB per machine", flush=True)
        macs = write_inventory(Path(tmp) / "inventory.yaml", image, build_id, max(args.clients))
        env = {**os.environ, "GOLDEN_HOME": str(home), "GOLDEN_PROJECT": str(ROOT)}
        env.pop("GOLDEN_INVENTORY", None)
        gport, nport = free_port(), free_port()
        try:
            serve = subprocess.Popen([GOLDEN, "serve", "--listen", f"127.0.0.1:{gport}", "-i",
                                      str(Path(tmp) / "inventory.yaml")], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "serve.log", "wb"))
            procs.append(serve)
            wait_http(f"http://127.0.0.1:{gport}/healthz")
            render = subprocess.run([GOLDEN, "pxe", "render", "--out", str(Path(tmp) / "pxe"), "--server-url",
                                     f"http://127.0.0.1:{nport}", "--interface", "lo", "--subnet", "127.0.0.0",
                                     "--listen", f"127.0.0.1:{nport}", "--upstream", f"127.0.0.1:{gport}",
                                     "--nginx-user", "root", "--store", str(store_dir)],
                                    env=env, cwd=ROOT, capture_output=True, text=True, check=False)
            if render.returncode != 0:
                raise SystemExit(f"golden pxe render failed: {render.stderr.strip()}")
            nginx = subprocess.Popen(["nginx", "-c", str(Path(tmp) / "pxe" / "nginx.conf"), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(nginx)
            wait_http(f"http://127.0.0.1:{nport}/store/{image}/{build_id}/vmlinuz")
            nginx_pids = tree_pids(nginx.pid)
            servers = {"golden serve": (f"http://127.0.0.1:{gport}", [serve.pid]),
                       "nginx (golden pxe render)": (f"http://127.0.0.1:{nport}", nginx_pids)}
            # sanity: both hand out a script naming the build's squashfs, and the same bytes
            for name, (base, _) in servers.items():
                script = subprocess.run(["curl", "-s", f"{base}/boot/{macs[0]}.ipxe"], capture_output=True,
                                        text=True, check=False).stdout
                if f"/store/{image}/{build_id}/rootfs.squashfs" not in script:
                    raise SystemExit(f"{name}: /boot/{macs[0]}.ipxe did not name the build:\n{script[:500]}")
            for base, pids in servers.values():
                storm(base, image, build_id, macs[:1], pids)  # warm-up: page cache, workers, logs
            rows = []
            for c in args.clients:
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
                for _ in range(args.repeat):  # interleaved, so a burst of load hits both servers
                    for name, (base, pids) in servers.items():
                        la = loadavg()[0]
                        r = storm(base, image, build_id, macs[:c], pids)
                        r.update(server=name, load_at_start=la)
                        runs[name].append(r)
                        print(f"  C={c} {name}: {r['wall_s']} s, {r['throughput_mb_s']} MB/s, "
                              f"{r['client_errors']} errors, load {la}", flush=True)
                for rs in runs.values():
                    med = median_run(rs)
                    med["runs_wall_s"] = [x["wall_s"] for x in rs]
                    med["client_errors_all_runs"] = sum(x["client_errors"] for x in rs)
                    rows.append(med)
        finally:
            stop_processes(procs)
    result: dict[str, Any] = {"benchmark": "boot_storm", "machine": machine(), "load_start": load_start,
                              "load_end": loadavg(), "build": source, "artifact_bytes": sizes,
                              "seconds": round(time.monotonic() - started, 1), "rows": rows}
    big = max(args.clients)
    g = next(r for r in rows if r["clients"] == big and r["server"] == "golden serve")
    n = next(r for r in rows if r["clients"] == big and r["server"] != "golden serve")
    slow = ratio(n["throughput_mb_s"], g["throughput_mb_s"])
    result["targets"] = [{"target": f"golden serve within {TARGET_RATIO:g}x of nginx throughput at C={big}",
                          "value": f"nginx/golden = {slow:.2f}x" if slow else "-",
                          "met": bool(slow and slow <= TARGET_RATIO and g["client_errors_all_runs"] == 0)}]
    print()
    print(f"Boot storm: each client fetches /boot/<mac>.ipxe + kernel + initrd + squashfs ({source})")
    print(f"(median-wall run of {args.repeat} per row; ERRORS counts clients with a non-200 over all runs)")
    print(machine_line(result["machine"], load_start, result["load_end"]))
    headers = ("C", "SERVER", "WALL S", "MB/S", "VS NGINX", "FINISH MIN S", "P50 S", "MAX S", "SPREAD S",
               "SRV CPU S", "CPU S/GB", "ERRORS", "LOAD")
    table = []
    for r in rows:
        ng = next(x for x in rows if x["clients"] == r["clients"] and x["server"] != "golden serve")
        rel = ratio(r["throughput_mb_s"], ng["throughput_mb_s"])
        table.append((r["clients"], r["server"], r["wall_s"], r["throughput_mb_s"],
                      None if rel is None else round(rel, 2), r["finish_min_s"], r["finish_p50_s"],
                      r["finish_max_s"], r["finish_spread_s"], r["server_cpu_s"], r["cpu_s_per_gb"],
                      r["client_errors_all_runs"], r["load_at_start"]))
    print(render_table(headers, table))
    print()
    print(render_table(("TARGET", "VALUE", "RESULT"),
                       [(t["target"], t["value"], verdict(t["met"])) for t in result["targets"]]))
    print(f"wrote {write_results('boot_storm', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
