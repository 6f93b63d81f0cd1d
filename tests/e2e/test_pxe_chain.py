"""Firmware to boot server through the real daemons: a QEMU machine on a tap in a network namespace
gets its address from the site's DHCP, its boot instructions from dnsmasq proxyDHCP (rendered by
`golden pxe render`), the chain script over TFTP, its iPXE script from `golden serve` through nginx,
and its kernel from nginx. The build here is a tiny fake, so the chain is all this test proves; the
full boot of a real build through the same network is in test_publish_boot.py."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.fixtures.boot import GOLDEN, golden_env, make_build, write_inventory
from tests.fixtures.bootnet import boot_network
from toolkit.core.run import run
from toolkit.state.db import SQLiteStateDB
from toolkit.store.artifacts import Store

pytestmark = pytest.mark.e2e

MAC = "52:54:00:77:00:01"


def test_firmware_chain_through_proxydhcp_tftp_nginx(tmp_path: Path):
    home = tmp_path / "home"
    store = Store(home / "store")
    make_build(store, "base", "b1")
    run([GOLDEN, "--home", str(home), "publish", "base", "b1", "--channel", "dev"], capture=True, env=golden_env())
    inv = write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, "base@dev")})
    with boot_network(tmp_path, home, inv) as net:
        vm, _serial = net.start_vm("node1", MAC, memory_mb=256)
        deadline = time.monotonic() + 180
        served = []
        while time.monotonic() < deadline and not ("/store/base/b1/vmlinuz" in net.access_log() and served):
            assert vm.poll() is None, (tmp_path / "run" / "node1.qemu.log").read_text()
            with SQLiteStateDB(home / "state.db").read() as repo:
                served = repo.events_after(0, ["served"])
            time.sleep(1)
        net.stop_vm(vm)
        log = net.access_log()
        proxy_log = (tmp_path / "run" / "dnsmasq-proxy.log").read_text()
        site_log = (tmp_path / "run" / "dnsmasq-site.log").read_text()
        assert served and served[0].mac == MAC and served[0].build_id == "b1", (log, proxy_log, site_log)
        # The address came from the site DHCP server, the boot file from the proxy.
        assert "DHCPACK(vsite) 10.77.0.1" in site_log
        assert "proxy" in proxy_log.lower() and "golden.ipxe" in proxy_log
        # Requests came from the machine's DHCP-given address (10.77.0.100-150); iPXE encodes the colons.
        requests = [line for line in log.splitlines() if re.match(r"^10\.77\.0\.1\d\d ", line)]
        boot_path = f"GET /boot/{MAC.replace(':', '%3A')}.ipxe"
        assert any(boot_path in line and '" 200 ' in line for line in requests), log
        assert any("GET /store/base/b1/vmlinuz" in line and '" 200 ' in line for line in requests), log
