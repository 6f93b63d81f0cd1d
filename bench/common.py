"""Shared helpers for the benchmarks: machine facts, percentiles, result tables, process accounting.

Everything here except ``Meter`` and ``machine()`` is pure, so it has unit tests.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("MET" if met else "NOT MET")


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.{digits}g}"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table, numbers right-aligned, text left-aligned."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    numeric = [all(isinstance(r[i], int | float) or r[i] is None for r in rows) if rows else False
               for i in range(len(headers))]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i])
                         for i, v in enumerate(vals)).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def loadavg() -> tuple[float, float, float]:
    a, b, c = os.getloadavg()
    return (round(a, 2), round(b, 2), round(c, 2))


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    for ln in Path("/proc/meminfo").read_text().splitlines():
        if ln.startswith("MemTotal:"):
            mem_kb = int(ln.split()[1])
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def machine_line(m: dict[str, Any], load_start: Sequence[float], load_end: Sequence[float] | None = None) -> str:
    s = f"machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB RAM; load avg at start {load_start[0]}"
    if load_end is not None:
        s += f", at end {load_end[0]}"
    return s


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write aside and rename, so a half-written result never appears."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.rename(out)
    return out


def proc_cpu_seconds(pid: int) -> float:
    """utime+stime of one process (not its children) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _pss(pid: int, fallback: int) -> int:
    """Proportional set size: shared pages split between sharers, so forked workers are not counted N times."""
    try:
        for ln in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if ln.startswith("Pss:"):
                return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return fallback


def _tree_rss(root: int) -> int:
    """Memory (PSS) of ``root`` and all its descendants, summed so fork-per-command counts every child."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * PAGE
    total, stack = 0, [root]
    while stack:
        p = stack.pop()
        total += _pss(p, rss.get(p, 0))
        stack.extend(children.get(p, ()))
    return total


@dataclass
class Measured:
    rc: int | None
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    timed_out: bool
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def run_measured(argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None,
                 stdin: str | None = None, sample_every: float = 0.2) -> Measured:
    """Run a contender as a child: wall time, CPU of it and every descendant it reaped (wait4
    rusage), and peak summed RSS of its process tree (sampled; catches short-lived forks only
    roughly, which favours the fork-per-command peer)."""
    started = time.monotonic()
    proc = subprocess.Popen(list(argv), env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            done.wait(sample_every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: list[str] = []
    err: list[str] = []

    def pump() -> None:
        o, e = proc.communicate(stdin)
        out.append(o)
        err.append(e)

    # communicate() in a thread and reap with wait4 ourselves, to get the rusage of the whole tree
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    try:
        pumper.join(timeout)
    except BaseException:
        os.killpg(proc.pid, 9)
        raise
    timed_out = pumper.is_alive()
    if timed_out:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        pumper.join(30)
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(rc=proc.returncode, wall_s=time.monotonic() - started, cpu_s=cpu, peak_rss_bytes=peak,
                    timed_out=timed_out, stdout=out[0] if out else "", stderr=err[0] if err else "")


def stop_processes(procs: list[subprocess.Popen[Any]]) -> None:
    """Stop the servers a benchmark started, newest first: TERM, then KILL after 10 s."""
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
