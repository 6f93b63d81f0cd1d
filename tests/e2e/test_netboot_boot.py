"""Boot a real baked image over the network in QEMU (TCG) and wait for its agent's report.

iPXE (the NIC's ROM) gets http://10.0.2.2:<port>/boot.ipxe from slirp's DHCP, fetches kernel and
initrd; live-boot in the initrd fetches rootfs.squashfs, checks its sha256 against golden.sha256
and mounts it; systemd starts golden-agent, which POSTs its report to the same throwaway server.
The second test serves a squashfs with one byte flipped under the same advertised sha256.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from toolkit.boot.netboot import render_boot_script
from toolkit.core.run import kill_group
from toolkit.lab.qemu import VmSpec, start_vm
from toolkit.store.artifacts import Build

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPORT_TIMEOUT = 6 * 60.0
REFUSAL_TIMEOUT = 5 * 60.0
MAC = "52:54:00:6e:b0:01"
REFUSAL = "golden: REFUSING TO BOOT: sha256 mismatch"


@dataclass
class BootServer:
    """A throwaway HTTP server on 127.0.0.1: static files from ``root`` plus POST /report."""

    root: Path
    port: int = 0
    reports: list[dict] = field(default_factory=list)
    gets: list[str] = field(default_factory=list)
    report_times: list[float] = field(default_factory=list)

    def url(self, name: str) -> str:
        # What the guest sees: slirp maps 10.0.2.2 to the host's loopback.
        return f"http://10.0.2.2:{self.port}/{name}"


@pytest.fixture
def boot_server(tmp_path: Path) -> Iterator[BootServer]:
    root = tmp_path / "www"
    root.mkdir()
    state = BootServer(root=root)

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            state.gets.append(self.path)
            super().do_GET()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if self.path != "/report" or self.headers.get("Content-Type") != "application/json":
                self.send_response(404)
            else:
                state.reports.append(json.loads(body))
                state.report_times.append(time.monotonic())
                self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def publish(build: Build, server: BootServer, token: str, *, corrupt: bool = False) -> str:
    """Put the build's artifacts and its boot script in the server's root; return the bootfile URL."""
    for name in ("vmlinuz", "initrd"):
        (server.root / name).symlink_to(build.artifact(name))
    squashfs = server.root / "rootfs.squashfs"
    if corrupt:
        shutil.copyfile(build.artifact("rootfs.squashfs"), squashfs)
        with open(squashfs, "r+b") as f:
            f.seek(squashfs.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
    else:
        squashfs.symlink_to(build.artifact("rootfs.squashfs"))
    script = render_boot_script(
        kernel_url=server.url("vmlinuz"),
        initrd_url=server.url("initrd"),
        squashfs_url=server.url("rootfs.squashfs"),
        sha256=build.manifest.artifacts["rootfs.squashfs"].sha256,
        build_id=build.build_id,
        image=build.image,
        mac=MAC,
        token=token,
        report_url=server.url("report"),
    )
    (server.root / "boot.ipxe").write_text(script)
    return server.url("boot.ipxe")


def serial_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for(condition: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes], serial: Path) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            pytest.fail(f"QEMU exited with {proc.returncode}; serial log tail:\n{serial_text(serial)[-3000:]}")
        time.sleep(1)
    return condition()


def test_netboot_reaches_the_agent_report(baked_base: Build, boot_server: BootServer, tmp_path: Path) -> None:
    token = f"{secrets.token_hex(8)}.{secrets.token_hex(32)}"
    bootfile = publish(baked_base, boot_server, token)
    serial = tmp_path / "serial.log"
    vm = VmSpec(name="golden-e2e-boot", mac=MAC, serial_log=serial, memory_mb=2048, bootfile=bootfile)
    started = time.monotonic()
    proc = start_vm(vm)
    try:
        arrived = wait_for(lambda: bool(boot_server.reports), REPORT_TIMEOUT, proc, serial)
        assert arrived, f"no report within {REPORT_TIMEOUT:.0f} s; serial log tail:\n{serial_text(serial)[-4000:]}"
        elapsed = boot_server.report_times[0] - started
        report = boot_server.reports[0]
        print(f"boot-to-report: {elapsed:.1f} s; drift reported by a fresh boot: {report['drift']}")
        assert report["build_id"] == baked_base.build_id
        assert report["token"] == token
        assert report["image"] == baked_base.image
        assert report["mac"] == MAC
        assert isinstance(report["drift"], list)
        assert "/rootfs.squashfs" in boot_server.gets
        # The initramfs said it checked the hash, and the agent said the report went through.
        wait_for(lambda: "report accepted" in serial_text(serial), 30, proc, serial)
        text = serial_text(serial)
        assert "golden: rootfs sha256 verified: " + baked_base.manifest.artifacts["rootfs.squashfs"].sha256 in text
        assert "golden-agent: report accepted" in text
    finally:
        kill_group(proc)


def test_corrupted_squashfs_is_refused(baked_base: Build, boot_server: BootServer, tmp_path: Path) -> None:
    token = f"{secrets.token_hex(8)}.{secrets.token_hex(32)}"
    bootfile = publish(baked_base, boot_server, token, corrupt=True)
    serial = tmp_path / "serial.log"
    vm = VmSpec(name="golden-e2e-refuse", mac=MAC, serial_log=serial, memory_mb=2048, bootfile=bootfile)
    started = time.monotonic()
    proc = start_vm(vm)
    try:
        refused = wait_for(lambda: REFUSAL in serial_text(serial), REFUSAL_TIMEOUT, proc, serial)
        assert refused, f"no refusal within {REFUSAL_TIMEOUT:.0f} s; serial log tail:\n{serial_text(serial)[-4000:]}"
        print(f"boot-to-refusal: {time.monotonic() - started:.1f} s")
        assert "/rootfs.squashfs" in boot_server.gets
        # Give a wrongly continuing boot time to reach userspace: nothing may mount or report.
        time.sleep(20)
        text = serial_text(serial)
        assert boot_server.reports == []
        assert "golden: rootfs sha256 verified" not in text
        assert "Welcome to" not in text  # systemd never started from the bad squashfs
    finally:
        kill_group(proc)
