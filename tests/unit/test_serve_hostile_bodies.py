"""Criterion 3 of issue 24, against a real ``golden serve`` process on 127.0.0.1: connections that
hold unfinished ``POST /report`` bodies cost no thread and never make ``/boot`` wait; each gets 408
when its body deadline passes, or 503 at once when the body readers' cap is full."""

from __future__ import annotations

import http.client
import socket
import statistics
import threading
import time
from pathlib import Path

from tests.fixtures.boot import make_build, start_golden_serve, write_inventory
from toolkit.store.artifacts import Store

MAC = "52:54:00:00:00:01"
HELD = 96  # connections each holding an unfinished report body
READERS = 64  # --max-body-readers: the first 64 wait for their body, the other 32 get 503 at once
BODY_TIMEOUT = 3.0
HEAD = (b"POST /report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def _answer(s: socket.socket, started: float, out: list[tuple[bytes, float]]) -> None:
    try:
        data = s.recv(200)
    except OSError:
        data = b""
    out.append((data[9:12], time.monotonic() - started))


def _boot_latencies(addr: tuple[str, int], n: int) -> list[float]:
    took = []
    for _ in range(n):
        conn = http.client.HTTPConnection(*addr, timeout=10)
        t = time.monotonic()
        conn.request("GET", f"/boot/{MAC}.ipxe")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read().startswith(b"#!ipxe")
        took.append(time.monotonic() - t)
        conn.close()
    return took


def test_held_report_bodies_never_stall_boot_scripts(tmp_path: Path) -> None:
    make_build(Store(tmp_path / "home" / "store"), "base", "b1")
    write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, "base@b1")})
    serve = start_golden_serve(tmp_path / "home", tmp_path / "inventory.yml", tmp_path / "serve.log",
                               extra=["--body-timeout", str(BODY_TIMEOUT), "--max-body-readers", str(READERS)])
    host, port = serve.url.removeprefix("http://").rsplit(":", 1)
    addr = (host, int(port))
    try:
        _boot_latencies(addr, 3)  # warm: the inventory is read, the template compiled
        baseline = _threads(serve.proc.pid)
        answers: list[tuple[bytes, float]] = []
        held, waiters = [], []
        for _ in range(HELD):
            s = socket.create_connection(addr, timeout=BODY_TIMEOUT + 5)
            s.sendall(HEAD)  # the head and one byte of a 1000-byte body, then nothing
            held.append(s)
            waiters.append(threading.Thread(target=_answer, args=(s, time.monotonic(), answers)))
            waiters[-1].start()
        time.sleep(0.3)
        during = _threads(serve.proc.pid)
        took = _boot_latencies(addr, 100)
        for w in waiters:
            w.join(BODY_TIMEOUT + 5)
        p99 = statistics.quantiles(took, n=100)[98]
        print(f"/boot p99 {p99 * 1000:.1f} ms (max {max(took) * 1000:.1f} ms) with {HELD} held bodies; "
              f"serve threads {baseline} before, {during} during")
        assert p99 < 1.0
        assert during <= baseline  # no thread per held connection
        codes = sorted(code for code, _ in answers)
        assert codes == [b"408"] * READERS + [b"503"] * (HELD - READERS), codes
        assert max(t for code, t in answers if code == b"503") < 1.0  # refused at once
        assert max(t for _, t in answers) < BODY_TIMEOUT + 1.0  # the deadline (plus one sweep) and no later
        log = serve.log.read_text()
        assert "body timeout from 127.0.0.1" in log and "body busy from 127.0.0.1" in log
        for s in held:
            s.close()
    finally:
        serve.stop()
