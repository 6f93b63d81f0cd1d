"""Serial-over-LAN against the lab's real virtual BMC: ipmitool (the independent peer) and golden console.

A QEMU lab machine booting its empty disk prints SeaBIOS and iPXE banners, fails and reboots every
few seconds: boot messages on a loop, no image needed. Then a reimage onto a build whose kernel is a
few bytes of nonsense: the machine netboots through iPXE, cannot boot it and never reports, and
``golden runs show RUN --host`` prints the end of its console as the reimage captured it.
A simulated machine has a generated console that echoes what is typed, enough for the interactive
session and its escape.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build, start_golden_serve
from tests.fixtures.common import free_port
from tests.fixtures.lab import ROOT, GoldenRunner
from toolkit.core.run import require
from toolkit.inventory.hosts import load_inventory
from toolkit.state.db import SQLiteStateDB
from toolkit.store.artifacts import Store

pytestmark = pytest.mark.integration

BOOT_LINES = ("SeaBIOS (version", "Booting from Hard Disk")


def _lab(golden: GoldenRunner, tmp_path: Path, *args: str) -> tuple[int, Path]:
    golden.run("lab", "up", "--nodes", "1", *args)
    port = load_inventory(golden.home / "lab" / "inventory.yaml").host("lab-n01").bmc.port  # type: ignore[union-attr]
    pwfile = tmp_path / "pw"
    pwfile.write_text(golden.lab_password)
    pwfile.chmod(0o600)
    return port, pwfile


def _ipmitool(port: int, pwfile: Path, *args: str) -> list[str]:
    # -f: the password from a file, never on argv
    return ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", "admin", "-f", str(pwfile), *args]


def _read_until(proc: subprocess.Popen[bytes], wanted: tuple[str, ...], timeout: float) -> str:
    assert proc.stdout is not None
    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline and not all(w.encode() in seen for w in wanted):
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    return seen.decode(errors="replace")


def _audit(golden: GoldenRunner, host: str) -> list[tuple[str, str]]:
    with SQLiteStateDB(golden.home / "state.db").read() as repo:
        return [(a.action, a.detail) for a in repo.list_audit(host)]


BUILD = "50150000000000a1"


@pytest.mark.timeout(900)
def test_ipmitool_and_golden_console_show_a_qemu_machines_boot(golden: GoldenRunner, tmp_path: Path) -> None:
    require("ipmitool")
    make_build(Store(golden.home / "store"), "web", BUILD)  # tiny nonsense artifacts: it cannot boot
    http = free_port()
    port, pwfile = _lab(golden, tmp_path, "--memory", "256", "--boot-url", f"http://10.0.2.2:{http}")
    info = subprocess.run(_ipmitool(port, pwfile, "sol", "info"), capture_output=True, text=True, timeout=60,
                          check=True).stdout
    assert "Enabled                         : true" in info and f"Payload Port                    : {port}" in info

    golden.run("power", "lab-n01", "on")
    started = time.monotonic()
    peer = subprocess.Popen(_ipmitool(port, pwfile, "sol", "activate"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seen = _read_until(peer, BOOT_LINES, timeout=180)
        assert "[SOL Session operational." in seen and all(w in seen for w in BOOT_LINES), seen[-3000:]
        print(f"ipmitool sol activate showed the boot after {time.monotonic() - started:.1f} s")
        assert peer.stdin is not None
        peer.stdin.write(b"\r~.")  # ipmitool's own escape: deactivate and leave
        peer.stdin.flush()
        assert peer.wait(timeout=30) == 0
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()

    # golden console, without --force: ipmitool deactivated its session, so the BMC's one SOL is free
    out = golden.run("console", "lab-n01", "--follow", "--seconds", "45", timeout=180)
    assert all(w in out.stdout for w in BOOT_LINES), out.stdout[-3000:]
    assert "closed (seconds)" in out.stderr and golden.lab_password not in out.stdout + out.stderr
    # QEMU still writes everything to serial.log: the lab's own reader shows the same boot
    assert all(w in golden.run("lab", "console", "lab-n01").stdout for w in BOOT_LINES)
    assert _audit(golden, "lab-n01") == [("console", "follow, at most 45 s")]
    hosts = {h["name"]: h for h in golden.json("fleet")}
    assert hosts["lab-n01"]["taint"] is None, "following a console is read-only: no taint"
    _never_reports(golden, tmp_path, http)


def _never_reports(golden: GoldenRunner, tmp_path: Path, http: int) -> None:
    """A reimage whose host never reports keeps its console; runs show --host prints the tail."""
    serve = start_golden_serve(golden.home, golden.home / "lab" / "inventory.yaml", tmp_path / "serve.log",
                               listen=f"127.0.0.1:{http}")
    try:
        res = golden.run("--json", "reimage", "lab-n01", "--image", f"web@{BUILD}", "--canary", "0",
                         "--boot-timeout", "90", "--retries", "0", "--yes", timeout=400,
                         check=False)
    finally:
        serve.stop()
    out = json.loads(res.stdout)
    assert res.returncode == 1 and out["results"] == {"lab-n01": "failed"}, out
    shown = golden.run("runs", "show", out["run_id"], "--host", "lab-n01").stdout
    assert "no genuine report of build" in shown, shown
    tail = shown.split("--- serial console of lab-n01, attempt 1: last ")[1]
    # the machine's own words over SOL: iPXE fetched its boot script from golden serve, then failed
    assert "iPXE" in tail and "/boot/" in tail and "[golden:" in tail, tail
    print(f"console tail of the failed host:\n{tail}")


def _spawn_on_pty(golden: GoldenRunner, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "golden"), *args], cwd=ROOT, env=golden.env(),
                            stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    return proc, leader


def _pty_until(fd: int, wanted: str, timeout: float) -> str:
    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline and wanted.encode() not in seen:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen.decode(errors="replace")


@pytest.mark.timeout(300)
def test_simulated_machine_console_sessions(golden: GoldenRunner, tmp_path: Path) -> None:
    require("ipmitool")
    port, pwfile = _lab(golden, tmp_path, "--no-vm")
    # a simulated machine answers SOL configuration too
    info = subprocess.run(_ipmitool(port, pwfile, "sol", "info"), capture_output=True, text=True, timeout=60,
                          check=True).stdout
    assert "Enabled                         : true" in info

    # follow while the machine powers on: its generated console says so
    follower = subprocess.Popen([str(Path(sys.executable).parent / "golden"), "console", "lab-n01", "--follow",
                                 "--seconds", "20"], cwd=ROOT, env=golden.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        assert "simulated console" in _read_until(follower, ("simulated console",), timeout=30)
        # one SOL session per BMC: a second client is refused (exit 1, one line), --force takes over
        busy = golden.run("console", "lab-n01", "--follow", "--seconds", "2", check=False)
        assert busy.returncode == 1 and "in use by another client" in busy.stderr, busy.stderr
        assert "Traceback" not in busy.stderr
        golden.run("power", "lab-n01", "on")
        assert "power on, booting from default" in _read_until(follower, ("power on",), timeout=30)
    finally:
        follower.terminate()  # SIGTERM ends a follow like Ctrl-C: SOL deactivated, exit 0
        assert follower.wait(timeout=30) == 0
    # the terminated follower deactivated SOL: no --force needed now
    taken = golden.run("console", "lab-n01", "--log", str(tmp_path / "cons.log"), "--seconds", "3")
    assert taken.stdout == "" and "simulated console" in (tmp_path / "cons.log").read_text()

    # interactive on a terminal: typing reaches the machine (it echoes), ~. leaves, the host is tainted
    proc, fd = _spawn_on_pty(golden, "console", "lab-n01", "--reason", "INC-9 look at the hang")
    try:
        assert "to leave]" in _pty_until(fd, "to leave]", timeout=30)
        os.write(fd, b"hello golden\r")
        assert "hello golden" in _pty_until(fd, "hello golden\r\n", timeout=30)
        os.write(fd, b"~.")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(fd)
    hosts = {h["name"]: h for h in golden.json("fleet")}
    assert hosts["lab-n01"]["taint"] == "interactive console by " + _user() + ": INC-9 look at the hang"
    # three sessions, newest first; the refused one is none
    assert [d for _, d in _audit(golden, "lab-n01")] == ["interactive", "follow, at most 3 s", "follow, at most 20 s"]
    log = "".join(p.read_text(errors="replace") for p in (golden.home / "lab").glob("vbmc-*.log"))
    assert golden.lab_password not in log and json.dumps(golden.lab_password) not in log


def _user() -> str:
    from toolkit.store.channels import current_user

    return current_user()
