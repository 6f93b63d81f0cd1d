"""The node's hardware collector (roles/golden_agent/files/golden-hwfacts): its parsers against real
tool outputs kept as fixtures, and tables of the cases a fleet shows (list-wrapped lshw, empty DIMM
slots, virtual block devices, placeholders a vendor leaves in SMBIOS).

Two real machines: ``sandbox-vm`` is our build host, a KVM guest whose hypervisor gives no SMBIOS
(dmidecode fails there); ``qemu-lab-machine`` is a lab machine as ``golden lab up --disks 2`` makes
it plus an NVMe disk (QEMU 7.2, SeaBIOS, -m 1792, SMBIOS serial GLAB-FIXTURE01), the outputs of
Debian 12's lshw, dmidecode and lsblk run in its initramfs (so without udev: lsblk has no virtio
serials, which the collector then reads from sysfs)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "hw"


def _load() -> ModuleType:
    path = ROOT / "roles" / "golden_agent" / "files" / "golden-hwfacts"
    loader = importlib.machinery.SourceFileLoader("golden_hwfacts", str(path))
    spec = importlib.util.spec_from_loader("golden_hwfacts", loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


hw = _load()


def test_lshw_of_a_cloud_vm_without_smbios():
    """A real `lshw -json -quiet -notime` of a KVM guest whose hypervisor gives no SMBIOS (our build host)."""
    facts = hw.parse_lshw((FIXTURES / "sandbox-vm" / "lshw.json").read_text())
    assert facts["system"] == {"vendor": "", "model": "", "serial": ""}
    assert facts["cpu"] == {"model": "Intel(R) Xeon(R) Processor", "sockets": 1, "threads": None}
    assert facts["memory_mib"] == 24576
    assert facts["disks"] == []  # lshw saw vda without a size there: lsblk's answer stands (next test)
    assert facts["nics"] == [{"name": "eth0", "mac": "02:fc:00:00:00:01", "driver": "virtio_net", "link": "up"}]


def test_lsblk_of_the_same_vm_keeps_the_disk_and_drops_zram():
    disks = hw.parse_lsblk((FIXTURES / "sandbox-vm" / "lsblk.json").read_text())
    assert disks == [{"name": "vda", "model": "", "serial": "", "size_bytes": 274877906944, "transport": "",
                      "rotational": True}]


def test_combined_facts_take_sizes_from_lsblk_and_threads_from_the_kernel():
    lshw = hw.parse_lshw((FIXTURES / "sandbox-vm" / "lshw.json").read_text())
    disks = hw.parse_lsblk((FIXTURES / "sandbox-vm" / "lsblk.json").read_text())
    facts = hw.combine(lshw, {}, disks, [], [], threads=2)
    assert facts["disks"][0]["size_bytes"] == 274877906944
    assert facts["cpu"] == {"model": "Intel(R) Xeon(R) Processor", "sockets": 1, "threads": 2}
    assert facts["nics"] == lshw["nics"]  # no sysfs NICs given: lshw's stand


def test_lshw_wrapped_in_a_list_as_some_versions_print_it():
    one = json.loads((FIXTURES / "sandbox-vm" / "lshw.json").read_text())
    assert hw.parse_lshw(json.dumps([one])) == hw.parse_lshw(json.dumps(one))


# A dmidecode text in the layout dmidecode 3.4 prints (types 1, 4 and 17), as written by a 2-socket
# server with one empty slot; the values are made up, the layout is dmidecode's.
DMIDECODE = """\
# dmidecode 3.4
Getting SMBIOS data from sysfs.
SMBIOS 3.2.0 present.

Handle 0x0001, DMI type 1, 27 bytes
System Information
\tManufacturer: Example Systems
\tProduct Name: R740-like
\tVersion: Not Specified
\tSerial Number: SRV-0042
\tUUID: 4c4c4544-0042-3010-8030-b2c04f4d3232

Handle 0x0400, DMI type 4, 48 bytes
Processor Information
\tSocket Designation: CPU1
\tVersion: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
\tStatus: Populated, Enabled
\tCore Count: 20
\tThread Count: 40

Handle 0x0401, DMI type 4, 48 bytes
Processor Information
\tSocket Designation: CPU2
\tVersion: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
\tStatus: Populated, Enabled
\tCore Count: 20
\tThread Count: 40

Handle 0x1100, DMI type 17, 84 bytes
Memory Device
\tSize: 32 GB
\tLocator: A1

Handle 0x1101, DMI type 17, 84 bytes
Memory Device
\tSize: No Module Installed
\tLocator: A2

Handle 0x1102, DMI type 17, 84 bytes
Memory Device
\tSize: 16384 MB
\tLocator: B1
"""


def test_dmidecode_system_sockets_and_installed_dimms():
    assert hw.parse_dmidecode(DMIDECODE) == {
        "system": {"vendor": "Example Systems", "model": "R740-like", "serial": "SRV-0042"},
        "cpu": {"model": "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", "sockets": 2, "threads": 80},
        "memory_mib": 49152,
    }


@pytest.mark.parametrize("serial, expected", [
    ("To Be Filled By O.E.M.", ""), ("Not Specified", ""), ("Default string", ""), ("0123456789", ""),
    ("SRV-0042", "SRV-0042"), ("  AB\x07C  ", "ABC"),
])
def test_vendor_placeholders_are_no_serial(serial, expected):
    text = f"Handle 0x0001, DMI type 1, 27 bytes\nSystem Information\n\tSerial Number: {serial}\n"
    assert hw.parse_dmidecode(text)["system"]["serial"] == expected


@pytest.mark.parametrize("name, kind, kept", [
    ("nvme0n1", "disk", True), ("sda", "disk", True), ("vdb", "disk", True), ("zram0", "disk", False),
    ("loop3", "loop", False), ("dm-0", "disk", False), ("md127", "disk", False), ("sr0", "rom", False),
])
def test_lsblk_keeps_only_the_machines_disks(name, kind, kept):
    text = json.dumps({"blockdevices": [{"name": name, "model": "M", "serial": "S", "size": 1024, "type": kind,
                                         "tran": "nvme", "rota": False}]})
    assert [d["name"] for d in hw.parse_lsblk(text)] == ([name] if kept else [])


def test_sysfs_nics_skip_devices_without_hardware(tmp_path):
    for name, mac, driver, state in (("eno1", "AA:BB:CC:00:11:22", "ixgbe", "up"), ("eno2", "aa:bb:cc:00:11:23",
                                                                                       "ixgbe", "down")):
        base = tmp_path / "net" / name
        (tmp_path / "drivers" / driver).mkdir(parents=True, exist_ok=True)
        (base / "device").mkdir(parents=True)
        (base / "device" / "driver").symlink_to(tmp_path / "drivers" / driver)
        (base / "address").write_text(mac + "\n")
        (base / "operstate").write_text(state + "\n")
        (base / "speed").write_text("10000\n" if state == "up" else "-1\n")
    (tmp_path / "net" / "lo").mkdir()  # no device behind it
    (tmp_path / "net" / "lo" / "address").write_text("00:00:00:00:00:00\n")
    assert hw.read_nics(str(tmp_path / "net")) == [
        {"name": "eno1", "mac": "aa:bb:cc:00:11:22", "driver": "ixgbe", "link": "up", "speed_mbps": 10000},
        {"name": "eno2", "mac": "aa:bb:cc:00:11:23", "driver": "ixgbe", "link": "down", "speed_mbps": None},
    ]


def test_lldp_neighbours():
    text = json.dumps({"lldp": {"interface": [
        {"eno1": {"chassis": {"tor-a12": {"id": {"type": "mac", "value": "00:11:22:33:44:55"}}},
                  "port": {"id": {"type": "ifname", "value": "Ethernet12"}}}},
        {"eno2": {"chassis": {"tor-b12": {}}, "port": {"id": {"type": "ifname", "value": "Ethernet12"}}}}]}})
    assert hw.parse_lldp(text) == [{"interface": "eno1", "chassis": "tor-a12", "port": "Ethernet12"},
                                   {"interface": "eno2", "chassis": "tor-b12", "port": "Ethernet12"}]


def test_a_tool_that_prints_garbage_is_an_error_line_not_a_crash():
    errors: list[str] = []
    assert hw._parsed(hw.parse_lshw, "{not json", "lshw", errors, {}) == {}
    assert errors == ["lshw: unreadable output (JSONDecodeError)"]


QEMU = FIXTURES / "qemu-lab-machine"


def test_lshw_of_a_qemu_lab_machine():
    facts = hw.parse_lshw((QEMU / "lshw.json").read_text())
    assert facts["system"] == {"vendor": "golden", "model": "lab machine", "serial": "GLAB-FIXTURE01"}
    assert facts["cpu"] == {"model": "QEMU Virtual CPU version 2.5+", "sockets": 1, "threads": 1}
    assert facts["memory_mib"] == 1792  # the memory node, not SeaBIOS's 96 KiB "firmware" one
    assert facts["disks"] == [  # NVMe's /dev/ng0n1 character device is no disk
        {"name": "vda", "model": "", "serial": "", "size_bytes": 8 << 30},
        {"name": "vdb", "model": "", "serial": "", "size_bytes": 1 << 30},
        {"name": "nvme0n1", "model": "", "serial": "", "size_bytes": 1 << 30}]
    assert facts["nics"] == [{"name": "eth0", "mac": "52:54:00:12:34:56", "driver": "virtio_net", "link": "down"}]


def test_dmidecode_of_a_qemu_lab_machine():
    assert hw.parse_dmidecode((QEMU / "dmidecode.txt").read_text()) == {
        "system": {"vendor": "golden", "model": "lab machine", "serial": "GLAB-FIXTURE01"},
        "cpu": {"model": "pc-i440fx-7.2", "sockets": 1, "threads": 1},  # QEMU writes its machine type there
        "memory_mib": 1792,
    }


def test_lsblk_of_a_qemu_lab_machine_strips_padding():
    assert hw.parse_lsblk((QEMU / "lsblk.json").read_text()) == [
        {"name": "vda", "model": "", "serial": "", "size_bytes": 8 << 30, "transport": "", "rotational": True},
        {"name": "vdb", "model": "", "serial": "", "size_bytes": 1 << 30, "transport": "", "rotational": True},
        {"name": "nvme0n1", "model": "QEMU NVMe Ctrl", "serial": "D2-FIXTURE01", "size_bytes": 1 << 30,
         "transport": "nvme", "rotational": False}]


def test_virtio_serials_come_from_sysfs_when_lsblk_has_none(tmp_path):
    (tmp_path / "vda").mkdir()
    (tmp_path / "vda" / "serial").write_text("D0-FIXTURE01\n")
    (tmp_path / "nvme0n1" / "device").mkdir(parents=True)
    (tmp_path / "nvme0n1" / "device" / "serial").write_text("D2-FIXTURE01        \n")
    (tmp_path / "nvme0n1" / "device" / "model").write_text("QEMU NVMe Ctrl\n")
    assert hw.sysfs_disk("vda", str(tmp_path)) == {"serial": "D0-FIXTURE01", "model": ""}
    assert hw.sysfs_disk("nvme0n1", str(tmp_path)) == {"serial": "D2-FIXTURE01", "model": "QEMU NVMe Ctrl"}
    assert hw.sysfs_disk("sdz", str(tmp_path)) == {"serial": "", "model": ""}


def test_combined_facts_of_the_lab_machine():
    facts = hw.combine(hw.parse_lshw((QEMU / "lshw.json").read_text()),
                       hw.parse_dmidecode((QEMU / "dmidecode.txt").read_text()),
                       hw.parse_lsblk((QEMU / "lsblk.json").read_text()), [], [], threads=1)
    assert facts["system"]["serial"] == "GLAB-FIXTURE01"
    assert facts["cpu"] == {"model": "QEMU Virtual CPU version 2.5+", "sockets": 1, "threads": 1}
    assert facts["memory_mib"] == 1792
    assert [d["name"] for d in facts["disks"]] == ["vda", "vdb", "nvme0n1"]
