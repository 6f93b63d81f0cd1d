"""lab up --nodes 2, bootdev pxe, power on: both QEMU machines request their iPXE script over HTTP;
power off stops them; lab down leaves no process, tap or file behind."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.lab import GoldenRunner

pytestmark = pytest.mark.e2e


class _Recorder(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        body = b"#!ipxe\necho golden-lab-test\nsleep 300\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _qemu_pids() -> set[int]:
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            data = cmdline.read_bytes()
        except OSError:
            continue
        if data.startswith(b"qemu-system") and b"lab-n0" in data:
            pids.add(int(cmdline.parent.name))
    return pids


def _taps() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith("tap")}


@pytest.mark.timeout(600)
def test_lab_netboots_over_ipmi(golden: GoldenRunner) -> None:
    _Recorder.paths = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    taps_before = _taps()
    qemu_before = _qemu_pids()
    try:
        started = time.monotonic()
        up = golden.json("lab", "up", "--nodes", "2", "--boot-url", f"http://10.0.2.2:{port}", "--memory", "256")
        macs = {n["name"]: n["mac"] for n in up["nodes"]}
        assert len(macs) == 2 and up["up"]
        again = golden.json("lab", "up", "--nodes", "2")  # harmless
        assert again["already_up"] and again["pids"] == up["pids"]
        assert all(r["ok"] for r in golden.json("bootdev", "lab", "pxe")["results"])
        assert all(r["power"] == "on" for r in golden.json("power", "lab", "on")["results"])
        assert len(_qemu_pids() - qemu_before) == 2

        wanted = {f"/boot/{mac.replace(':', '%3A')}.ipxe" for mac in macs.values()}
        deadline = time.monotonic() + 240
        while not wanted <= set(_Recorder.paths) and time.monotonic() < deadline:
            time.sleep(1)
        assert wanted <= set(_Recorder.paths), (_Recorder.paths, golden.run("lab", "console", "lab-n01").stdout)
        print(f"both machines fetched their iPXE script {time.monotonic() - started:.1f} s after lab up")

        assert "golden-lab-test" in golden.run("lab", "console", "lab-n01").stdout
        assert all(r["power"] == "off" for r in golden.json("power", "lab", "off")["results"])
        assert not (_qemu_pids() - qemu_before)
    finally:
        server.shutdown()
        t0 = time.monotonic()
        golden.run("lab", "down")
        print(f"lab down took {time.monotonic() - t0:.1f} s")
    assert not (_qemu_pids() - qemu_before)
    mine = str(golden.home).encode()  # other labs (other tests, benchmarks) may run meanwhile
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if b"toolkit.lab.vbmc" in _safe_read(p) and mine in _safe_read(p)]
    assert _taps() == taps_before
    assert not (golden.home / "lab").exists()


def _safe_read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
