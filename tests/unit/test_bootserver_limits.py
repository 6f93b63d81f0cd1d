"""The boot server under hostile or careless clients: idle and trickling connections, resets, a full pool,
expired tokens, pruning, and a drain on SIGTERM. Real sockets on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import logging
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.boot import http_get, make_build, start_golden_serve, write_inventory
from tests.fixtures.promtext import prom_samples
from toolkit.boot import netboot
from toolkit.boot.connections import Limits
from toolkit.boot.retention import RetentionPolicy, prune_state
from toolkit.boot.running import start_in_thread
from toolkit.boot.server import BootHTTPServer, ServerConfig, make_server
from toolkit.boot.token import issue_token
from toolkit.fleet.fleet import Fleet
from toolkit.state.db import SQLiteStateDB
from toolkit.store.artifacts import Store

SECRET = b"s" * 64
MAC = "52:54:00:00:00:01"


def _home(tmp_path: Path, squashfs_bytes: int) -> Path:
    store = Store(tmp_path / "home" / "store")
    make_build(store, "base", "b1", sizes={"vmlinuz": 3000, "initrd": 2000, "rootfs.squashfs": squashfs_bytes})
    write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, "base@b1")})
    return tmp_path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return _home(tmp_path, 64 << 10)


def _server(home: Path, limits: Limits) -> BootHTTPServer:
    db = SQLiteStateDB(home / "home" / "state.db")
    store = Store(home / "home" / "store")
    fleet = Fleet(db, store, home / "inventory.yml")
    server = make_server("127.0.0.1:0", ServerConfig(fleet=fleet, store=store, secret=SECRET, limits=limits))
    start_in_thread(server)
    return server


@pytest.fixture
def small(home: Path) -> Iterator[BootHTTPServer]:
    server = _server(home, Limits(workers=4, fast_workers=2, queue=4, idle_timeout_s=2.0, header_timeout_s=1.5,
                                  io_timeout_s=2.0))
    yield server
    server.shutdown()
    server.server_close()


_get = http_get


def _connect(server: BootHTTPServer, first: bytes = b"") -> socket.socket:
    s = socket.create_connection(server.server_address[:2], timeout=5)
    if first:
        s.sendall(first)
    return s


def _reset(s: socket.socket) -> None:
    """Close with RST instead of FIN, as a crashed or killed client does."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _metrics(server: BootHTTPServer) -> dict[str, float]:
    text = _get(server, "/metrics")[1].decode()
    return prom_samples(text)


def test_idle_and_trickling_connections_cost_no_worker(small: BootHTTPServer) -> None:
    baseline = threading.active_count()
    idle = [_connect(small) for _ in range(300)]
    trickle = [_connect(small, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(100)]
    time.sleep(0.3)
    worst = 0.0
    for _ in range(20):  # 2 + 4 workers, 400 hostile connections: every boot script still comes at once
        t = time.monotonic()
        code, body = _get(small, f"/boot/{MAC}.ipxe")
        worst = max(worst, time.monotonic() - t)
        assert code == 200 and body.startswith(b"#!ipxe")
    assert worst < 1.0
    assert threading.active_count() <= baseline + 2  # no thread per connection
    m = _metrics(small)
    assert int(m["golden_http_connections_waiting"]) >= 390 and m["golden_http_workers"] == 6
    for s in idle + trickle:
        s.close()


def test_idle_and_half_sent_requests_time_out(small: BootHTTPServer) -> None:
    idle = _connect(small)
    half = _connect(small, b"GET /healthz HTTP/1.1\r\n")
    t = time.monotonic()
    assert half.recv(100) == b"" and time.monotonic() - t < 3.5  # header timeout 1.5 s (+ a sweep)
    assert idle.recv(100) == b"" and time.monotonic() - t < 4.0  # idle timeout 2 s
    m = _metrics(small)
    assert m['golden_http_connections_closed_total{reason="header_timeout"}'] == 1
    assert m['golden_http_connections_closed_total{reason="idle_timeout"}'] == 1


def _stalled_download(server: BootHTTPServer, path: str) -> socket.socket:
    """A client that asks for a large file and never reads it: its worker blocks writing until io_timeout."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.connect(server.server_address[:2])
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


def test_a_full_pool_answers_503_instead_of_queueing_for_ever(tmp_path: Path) -> None:
    home = _home(tmp_path, 32 << 20)
    server = _server(home, Limits(workers=1, fast_workers=1, queue=1, io_timeout_s=3.0, queue_wait_s=0.5))
    try:
        stuck = []
        for want in ("busy", "queued"):  # one worker blocked on a client that never reads, then one request queued
            stuck.append(_stalled_download(server, "/store/base/b1/rootfs.squashfs"))
            deadline = time.monotonic() + 5
            while server.pool.stats()[want] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        third = _connect(server, b"GET /store/base/b1/vmlinuz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert third.recv(200).startswith(b"HTTP/1.1 503 ")
        assert _get(server, "/healthz")[0] == 200  # its own lane: boot scripts never wait for transfers
        for s in stuck:
            s.close()
        time.sleep(3.5)  # the blocked write gives up after io_timeout: the worker is free again
        assert _get(server, "/store/base/b1/vmlinuz")[0] == 200
        assert _metrics(server)['golden_http_connections_closed_total{reason="busy"}'] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_boot_storm_is_served_late_rather_than_refused(home: Path) -> None:
    server = _server(home, Limits(workers=1, fast_workers=1, queue=1))
    try:
        results: list[int] = []

        def boot() -> None:
            results.append(_get(server, f"/boot/{MAC}.ipxe", timeout=20)[0])

        threads = [threading.Thread(target=boot) for _ in range(40)]  # 40 at once, one worker, a queue of one
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [200] * 40
    finally:
        server.shutdown()
        server.server_close()


def test_boot_scripts_have_a_lane_of_their_own(home: Path) -> None:
    server = _server(home, Limits(workers=1, fast_workers=1, queue=1, io_timeout_s=5.0))
    try:
        hog = _connect(server, b"GET /store/base/b1/rootfs.squashfs HTTP/1.1\r\nHost: x\r\n\r\n")
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # never read: the transfer worker stays busy
        queued = _connect(server, b"GET /store/base/b1/initrd HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        t = time.monotonic()
        assert _get(server, f"/boot/{MAC}.ipxe")[0] == 200 and time.monotonic() - t < 1.0
        hog.close()
        queued.close()
    finally:
        server.shutdown()
        server.server_close()


def test_keep_alive_and_pipelining_still_work(small: BootHTTPServer) -> None:
    s = _connect(small, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while data.count(b"ok\n") < 2:
        chunk = s.recv(4096)
        assert chunk
        data += chunk
    assert data.count(b"HTTP/1.1 200 ") == 2
    s.close()


def test_metrics_have_histograms_gauges_and_build_info(small: BootHTTPServer) -> None:
    _get(small, f"/boot/{MAC}.ipxe")
    _get(small, "/store/base/b1/vmlinuz")
    deadline = time.monotonic() + 2  # a request is counted just after its last byte left: the client may be first
    want = ('golden_http_request_duration_seconds_sum{route="artifact"}',
            'golden_http_request_duration_seconds_count{route="boot"}')
    while not all(k in (m := _metrics(small)) for k in want):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert m['golden_http_request_duration_seconds_count{route="boot"}'] == 1
    assert m['golden_http_request_duration_seconds_bucket{le="+Inf",route="boot"}'] == 1
    assert float(m['golden_http_request_duration_seconds_sum{route="artifact"}']) > 0
    assert "golden_http_requests_in_flight" in m and "golden_http_requests_queued" in m
    assert any(k.startswith("golden_build_info{version=") for k in m)


def test_an_expired_token_is_refused_and_counted(small: BootHTTPServer) -> None:
    old = issue_token(SECRET, MAC, "b1", issued_at=time.time() - 5 * 3600, image="base")
    payload = {"mac": MAC, "build_id": "b1", "image": "base", "token": old, "hostname": "node1",
               "booted_at": "2026-11-26T21:00:00Z", "uptime_s": 1.0, "drift": [], "agent_version": "1.0"}
    host, port = small.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=5)
    conn.request("POST", "/report", json.dumps(payload), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 403 and json.loads(resp.read())["kind"] == "expired"
    conn.close()
    assert _metrics(small)['golden_report_rejects_total{reason="expired"}'] == 1


def test_a_pruned_spent_token_is_still_refused(small: BootHTTPServer) -> None:
    script = _get(small, f"/boot/{MAC}.ipxe")[1].decode()
    token = next(w for w in script.split() if w.startswith("golden.token=")).split("=", 1)[1]
    payload = {"mac": MAC, "build_id": "b1", "image": "base", "token": token, "hostname": "node1",
               "booted_at": "2026-11-26T21:00:00Z", "uptime_s": 1.0, "drift": [], "agent_version": "1.0"}

    def post() -> tuple[int, str]:
        host, port = small.server_address[:2]
        conn = http.client.HTTPConnection(str(host), port, timeout=5)
        conn.request("POST", "/report", json.dumps(payload), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read()).get("kind", "")

    assert post()[0] == 200
    payload["uptime_s"] = 2.0  # another report with the spent token (the same one resent is answered again)
    assert post() == (403, "replay")
    pruned = prune_state(small.config.fleet.db, RetentionPolicy(spent_grace_s=0), time.time() + 1)
    assert pruned.spent_tokens == 1
    assert post() == (403, "unknown-token")


def test_the_boot_template_is_compiled_once(small: BootHTTPServer) -> None:
    netboot._template.cache_clear()
    for _ in range(5):
        assert _get(small, f"/boot/{MAC}.ipxe")[0] == 200
    info = netboot._template.cache_info()
    assert (info.misses, info.hits) == (1, 4)


def test_resets_leave_no_traceback_and_sigterm_drains(tmp_path: Path) -> None:
    size = 48 << 20  # more than loopback's socket buffers hold: the transfer is still running at SIGTERM
    home = _home(tmp_path, size)
    log = home / "serve.log"
    serve = start_golden_serve(home / "home", home / "inventory.yml", log, extra=["--drain", "10"])
    try:
        host, port = serve.url.removeprefix("http://").rsplit(":", 1)
        addr = (host, int(port))
        for first in (b"", b"GET /boot/", b"GET /store/base/b1/rootfs.squashfs HTTP/1.1\r\nHost: x\r\n\r\n",
                      b"POST /report HTTP/1.1\r\nContent-Length: 50\r\nContent-Type: application/json\r\n\r\n{"):
            for _ in range(5):
                s = socket.create_connection(addr, timeout=5)
                s.sendall(first)
                time.sleep(0.02)
                _reset(s)
        time.sleep(0.5)
        # an in-flight transfer when SIGTERM arrives: it finishes within --drain, then the server exits
        slow = socket.create_connection(addr, timeout=10)
        slow.sendall(b"GET /store/base/b1/rootfs.squashfs HTTP/1.1\r\nHost: x\r\n\r\n")
        got = len(slow.recv(65536))
        serve.proc.send_signal(signal.SIGTERM)
        t = time.monotonic()
        while chunk := slow.recv(1 << 20):  # a slowish reader: well within the 10 s --drain, even on a loaded box
            got += len(chunk)
            time.sleep(0.002)
        assert got > size  # the whole squashfs (and its headers) arrived after SIGTERM
        assert serve.proc.wait(15) == 0 and time.monotonic() - t < 12
    finally:
        serve.stop()
    err = log.read_text()
    assert "Traceback" not in err, err


def test_access_log_at_info_on_its_own_logger(small: BootHTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="golden.serve.access"):
        assert _get(small, "/healthz")[0] == 200
        deadline = time.monotonic() + 2
        while not [r for r in caplog.records if r.name == "golden.serve.access"] and time.monotonic() < deadline:
            time.sleep(0.01)
    [line] = [r.getMessage() for r in caplog.records if r.name == "golden.serve.access"]
    assert line.startswith('127.0.0.1 "GET /healthz HTTP/1.1" 200 3 ') and line.endswith("ms")
