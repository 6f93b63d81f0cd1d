"""Independent peers: ipmitool (client) against our virtual BMC; our client against OpenIPMI's ipmi_sim."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.common import free_port
from tests.fixtures.lab import GoldenRunner
from toolkit.bmc.base import BmcCommandError, BmcUnreachableError, BmcUnsupportedError, BootDevice, PowerAction
from toolkit.bmc.endpoint import BmcEndpoint
from toolkit.bmc.ipmi import IpmiClient
from toolkit.core.run import kill_group, require, spawn
from toolkit.core.secret import Secret
from toolkit.inventory.hosts import load_inventory

pytestmark = pytest.mark.integration


def _ipmitool(port: int, pwfile: Path, *args: str) -> str:
    # -f: the password comes from a file, never from argv
    out = subprocess.run(["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", "admin",
                          "-f", str(pwfile), "-R", "3", "-N", "2", *args],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


@pytest.mark.timeout(300)
def test_ipmitool_drives_virtual_bmc(golden: GoldenRunner, tmp_path: Path) -> None:
    require("ipmitool")
    golden.run("lab", "up", "--nodes", "1", "--no-vm")
    port = load_inventory(golden.home / "lab" / "inventory.yaml").host("lab-n01").bmc.port  # type: ignore[union-attr]
    pwfile = tmp_path / "pw"
    pwfile.write_text(golden.lab_password)
    pwfile.chmod(0o600)
    assert "Chassis Power is off" in _ipmitool(port, pwfile, "power", "status")
    _ipmitool(port, pwfile, "power", "on")
    assert "Chassis Power is on" in _ipmitool(port, pwfile, "power", "status")
    _ipmitool(port, pwfile, "chassis", "bootdev", "pxe")
    assert "Force PXE" in _ipmitool(port, pwfile, "chassis", "bootparam", "get", "5")
    # and our own reader agrees with what ipmitool set
    # the BMC process rewrites its status file at most every 0.3 s: give it a moment
    deadline = time.monotonic() + 10
    status = golden.json("lab", "status")
    while status["nodes"][0]["bootdev"] != "network" and time.monotonic() < deadline:
        time.sleep(0.2)
        status = golden.json("lab", "status")
    assert status["nodes"][0]["bootdev"] == "network" and status["nodes"][0]["power"] == "on"
    # a UEFI override (boot flag "EFI"), as golden reimage sends for uefi: true, is kept and read back
    _ipmitool(port, pwfile, "chassis", "bootdev", "pxe", "options=efiboot")
    assert "BIOS EFI boot" in _ipmitool(port, pwfile, "chassis", "bootparam", "get", "5")
    while len(status["nodes"][0]["overrides"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        status = golden.json("lab", "status")
    assert status["nodes"][0]["overrides"] == ["network once legacy", "network once uefi"], status
    _ipmitool(port, pwfile, "power", "off")
    assert "Chassis Power is off" in _ipmitool(port, pwfile, "power", "status")


LAN_CONF = """\
name "goldensim"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 {serial_port} codec VM
  startcmd "sleep 300"
  startnow false
  user 2 true "admin" "{password}" admin 10 none md2 md5 straight
"""

SIM_EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""



@pytest.mark.timeout(300)
def test_our_client_drives_ipmi_sim(tmp_path: Path) -> None:
    require("ipmi_sim", "openipmi")
    port = free_port(socket.SOCK_DGRAM)
    password = "sim-" + tmp_path.name[-8:]
    # ipmi_sim reads its users from lan.conf: a 0600 file in the test's own folder
    conf = tmp_path / "lan.conf"
    conf.write_text(LAN_CONF.format(port=port, serial_port=free_port(), password=password))
    conf.chmod(0o600)
    (tmp_path / "sim.emu").write_text(SIM_EMU)
    (tmp_path / "state").mkdir()
    log = open(tmp_path / "ipmi_sim.log", "wb")
    proc = spawn(["ipmi_sim", "-c", conf, "-f", tmp_path / "sim.emu", "-s", tmp_path / "state", "-n"], stdout=log)
    try:
        host = BmcEndpoint(name="sim1", address="127.0.0.1", port=port, user="admin", password=Secret(password))
        client = None
        deadline = time.monotonic() + 20
        while client is None:
            try:
                candidate = IpmiClient(host)
                candidate.get_power()
                client = candidate
            except BmcUnreachableError:  # ipmi_sim not listening yet; any other error is a real one
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert client.get_power() == "off"
        client.set_power(PowerAction.ON)
        deadline = time.monotonic() + 20
        while client.get_power() != "on" and time.monotonic() < deadline:
            time.sleep(0.3)
        assert client.get_power() == "on"
        # ipmi_sim refuses boot-option writes unless a VM is attached: a typed, one-line error
        with pytest.raises((BmcCommandError, BmcUnsupportedError)) as exc:
            client.set_bootdev(BootDevice.PXE)
        text = str(exc.value)
        assert text.startswith("sim1: BMC 127.0.0.1 ") and "boot device pxe" in text and "\n" not in text
        assert password not in text
        client.set_power(PowerAction.OFF)
        deadline = time.monotonic() + 20
        while client.get_power() != "off" and time.monotonic() < deadline:
            time.sleep(0.3)
        assert client.get_power() == "off"
        client.close()
    finally:
        kill_group(proc)
        log.close()
