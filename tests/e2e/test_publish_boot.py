"""Publish, boot, promote, reassign, roll back: real QEMU machines (TCG, iPXE ROM) netboot what the
channels say, from `golden serve`, and their agents' reports mark observed == desired.

The baked build comes from the cached `baked_base` fixture. Rollback needs a second build: it is
the same artifacts committed under another build id (hard links, a manifest naming the new id), so
which build the machine runs is visible in its report without a second multi-minute bake.
The last test boots through the real daemons `golden pxe render` configures (dnsmasq proxyDHCP,
TFTP, nginx) inside network namespaces, the machine on a tap.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures.boot import GOLDEN, ServeProcess, golden_env, start_golden_serve, write_inventory
from tests.fixtures.bootnet import boot_network
from toolkit.core.run import kill_group, run
from toolkit.lab.qemu import VmSpec, start_vm
from toolkit.state.db import HostRow, SQLiteStateDB
from toolkit.store.artifacts import Build, Store

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

REPORT_TIMEOUT = 8 * 60.0
MAC = "52:54:00:3b:00:01"


def golden(home: Path, *args: str) -> str:
    return run([GOLDEN, "--home", str(home), *args], capture=True, env=golden_env()).stdout


def link_build(src: Build, store: Store, build_id: str | None = None) -> Build:
    """Commit ``src`` into ``store`` by hard links; under ``build_id`` when given (a second build)."""
    staged = store.stage(src.image)
    for name in src.manifest.artifacts:
        os.link(src.path / name, staged / name)
    manifest = src.manifest
    if build_id is not None:
        manifest = manifest.model_copy(update={"build_id": build_id,
                                               "created_at": datetime.now(UTC).isoformat()})
    manifest.write(staged / "manifest.json")
    return store.commit(src.image, manifest.build_id, staged)


@dataclass
class Lab:
    home: Path
    work: Path
    inventory: Path
    serve: ServeProcess
    a: Build
    b: Build

    def host(self) -> HostRow | None:
        with SQLiteStateDB(self.home / "state.db").read() as repo:
            return repo.get_host("node1")

    def boot(self, expect: str, tag: str) -> float:
        """Boot node1 from golden serve until its agent's report is accepted; return seconds to report."""
        serial = self.work / f"serial-{tag}.log"
        vm = VmSpec(name=f"golden-e2e-{tag}", mac=MAC, serial_log=serial, memory_mb=2048,
                    bootfile=f"{self.serve.url.replace('127.0.0.1', '10.0.2.2')}/boot/{MAC}.ipxe")
        before = self.host()
        since = before.last_report_at if before and before.last_report_at else 0.0
        started = time.monotonic()
        proc = start_vm(vm)
        try:
            return wait_report(self.host, since, expect, proc, serial, started)
        finally:
            kill_group(proc)


def wait_report(host, since: float, expect: str, proc: subprocess.Popen[bytes], serial: Path,
                started: float) -> float:
    deadline = time.monotonic() + REPORT_TIMEOUT
    while time.monotonic() < deadline:
        row = host()
        if row is not None and row.last_report_at and row.last_report_at > since:
            assert row.observed_build == expect, (row, serial.read_text(errors="replace")[-3000:])
            return time.monotonic() - started
        if proc.poll() is not None:
            pytest.fail(f"QEMU exited {proc.returncode}: {serial.read_text(errors='replace')[-3000:]}")
        time.sleep(2)
    pytest.fail(f"no accepted report within {REPORT_TIMEOUT:.0f} s: {serial.read_text(errors='replace')[-4000:]}")


@pytest.fixture
def lab(baked_base: Build, tmp_path: Path) -> Iterator[Lab]:
    home = tmp_path / "home"
    store = Store(home / "store")
    a = link_build(baked_base, store)
    b = link_build(baked_base, store, build_id=f"{baked_base.build_id[:12]}-relinked")
    inv = write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, "base@dev")})
    serve = start_golden_serve(home, inv, tmp_path / "serve.log")
    try:
        yield Lab(home, tmp_path, inv, serve, a, b)
    finally:
        serve.stop()


def test_publish_boot_promote_reassign_rollback(lab: Lab) -> None:
    a, b = lab.a, lab.b
    golden(lab.home, "publish", "base", a.build_id, "--channel", "dev")
    t1 = lab.boot(a.build_id, "dev")
    row = lab.host()
    assert row is not None and row.observed_build == row.served_build == a.build_id
    status = {h["name"]: h for h in json.loads(golden(lab.home, "--json", "fleet", "-i", str(lab.inventory)))}
    assert status["node1"]["desired"] == status["node1"]["observed"] == a.build_id
    # A fresh boot is in-sync, never drifted: false drift would hide real drift.
    assert status["node1"]["state"] == "in-sync", status["node1"]

    # Promote the exact build and move the host to staging: the next boot runs the same build id.
    golden(lab.home, "promote", "base", "--from", "dev", "--to", "staging")
    golden(lab.home, "publish", "base", b.build_id, "--channel", "dev")  # dev moves on; staging must not
    write_inventory(lab.inventory, {"node1": (MAC, "base@staging")})
    t2 = lab.boot(a.build_id, "staging")

    # A new build reaches staging, then is rolled back: the machine boots the previous build again.
    golden(lab.home, "promote", "base", "--from", "dev", "--to", "staging", "--force", "--reason",
           "e2e: relinked copy carries the same check results")
    t3 = lab.boot(b.build_id, "staging-new")
    out = golden(lab.home, "rollback", "base", "--channel", "staging")
    assert f"{b.build_id} -> {a.build_id}" in out
    t4 = lab.boot(a.build_id, "rolled-back")
    print(f"boot-to-report seconds: dev {t1:.0f}, staging {t2:.0f}, staging-new {t3:.0f}, rolled-back {t4:.0f}")


def test_boot_through_rendered_dnsmasq_and_nginx(baked_base: Build, tmp_path: Path) -> None:
    home = tmp_path / "home"
    build = link_build(baked_base, Store(home / "store"))
    golden(home, "publish", "base", build.build_id, "--channel", "prod")
    inv = write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, "base@prod")})
    with boot_network(tmp_path, home, inv) as net:
        started = time.monotonic()
        proc, serial = net.start_vm("node1", MAC, memory_mb=2048)

        def host() -> HostRow | None:
            with SQLiteStateDB(home / "state.db").read() as repo:
                return repo.get_host("node1")

        took = wait_report(host, 0.0, build.build_id, proc, serial, started)
        net.stop_vm(proc)
        print(f"boot-to-report through dnsmasq+nginx: {took:.0f} s")
        log = net.access_log()
        # The artifacts came from nginx (sendfile), the script and the report through it from golden serve.
        assert f"GET /store/base/{build.build_id}/rootfs.squashfs HTTP/1.1\" 200" in log, log
        assert "POST /report HTTP/1.1\" 200" in log, log
