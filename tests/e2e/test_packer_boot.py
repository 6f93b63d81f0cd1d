"""The packer-baked image (``baked_seeded``) netboots like a DIB build: iPXE, live-boot's sha256
check of rootfs.squashfs, systemd, and the agent's report with its build id and passing boot checks
(the kvstore service seeded at bake time is active and serves its seed)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from tests.e2e.test_netboot_boot import MAC, BootServer, boot_server, publish, serial_text, wait_for
from toolkit.core.run import kill_group
from toolkit.lab.qemu import VmSpec, start_vm
from toolkit.store.artifacts import Build

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

__all__ = ["boot_server"]  # the fixture, shared with the DIB build's boot test

REPORT_TIMEOUT = 6 * 60.0


def test_packer_build_boots_and_reports_its_checks(baked_seeded: Build, boot_server: BootServer,
                                                   tmp_path: Path) -> None:
    token = f"{secrets.token_hex(8)}.{secrets.token_hex(32)}"
    bootfile = publish(baked_seeded, boot_server, token)
    serial = tmp_path / "serial.log"
    vm = VmSpec(name="golden-e2e-packer", mac=MAC, serial_log=serial, memory_mb=2048, bootfile=bootfile)
    started = time.monotonic()
    proc = start_vm(vm)
    try:
        arrived = wait_for(lambda: bool(boot_server.reports), REPORT_TIMEOUT, proc, serial)
        assert arrived, f"no report within {REPORT_TIMEOUT:.0f} s; serial log tail:\n{serial_text(serial)[-4000:]}"
        report = boot_server.reports[0]
        print(f"packer build boot-to-report: {boot_server.report_times[0] - started:.1f} s; checks {report['checks']}")
        assert report["build_id"] == baked_seeded.build_id and report["image"] == "seeded"
        assert report["token"] == token
        checks = report["checks"]
        assert set(checks) == {"agent-active", "kvstore-active", "kvstore-serves"}, checks
        assert all(c["passed"] for c in checks.values()), checks
        sha = baked_seeded.manifest.artifacts["rootfs.squashfs"].sha256
        assert "golden: rootfs sha256 verified: " + sha in serial_text(serial)
    finally:
        kill_group(proc)
