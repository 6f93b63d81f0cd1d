"""plan_lab and the lab inventory (pure)."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import pytest
import yaml

from toolkit.bmc.endpoint import BmcProtocol
from toolkit.core.errors import InputError
from toolkit.inventory.hosts import parse_inventory
from toolkit.lab.machines import (
    make_lab_tls,
    network_label,
    plan_lab,
    render_chain_script,
    render_inventory,
    serve_configs,
)
from toolkit.lab.qemu import VmSpec
from toolkit.lab.vbmc import MAX_OVERRIDES_KEPT, SimMachine, SimOptions, honoured_boot, vm_spec


def test_plan_and_inventory_roundtrip(tmp_path: Path) -> None:
    plan = plan_lab(40, lab_id="abc", base_port=20000, no_vm=True)
    assert [n.bmc_port for n in plan.nodes] == list(range(20000, 20040))
    assert len({n.mac for n in plan.nodes}) == 40
    assert plan.nodes[0].name == "lab-n01" and plan.nodes[39].rack == "lab-rack3"
    inv = parse_inventory(render_inventory(plan, "pw-123"), tmp_path / "inventory.yaml")
    assert len(inv.select("lab")) == 40 and len(inv.select("lab-rack1")) == 16
    host = inv.host("lab-n17")
    assert host.groups == ("lab", "lab-rack2") and host.mac == plan.nodes[16].mac
    assert host.bmc is not None and host.bmc.port == 20016 and host.bmc.password.reveal() == "pw-123"
    assert plan_lab(40, lab_id="abc", base_port=20000, no_vm=True) == plan  # deterministic
    assert plan_lab(40, lab_id="xyz", base_port=20000, no_vm=True).nodes[0].mac != plan.nodes[0].mac


def test_vm_configs_and_chain_script(tmp_path: Path) -> None:
    plan = plan_lab(2, lab_id="abc", base_port=20000, boot_url="http://10.0.2.2:9090/")
    [cfg] = serve_configs(plan, tmp_path, "pw")
    assert cfg.bmcs[0].vm is not None and cfg.bmcs[0].vm["bootfile"] == "boot.ipxe"
    assert render_chain_script(plan.boot_url) == "#!ipxe\nchain http://10.0.2.2:9090/boot/${mac}.ipxe || shell\n"


def test_a_redfish_lab_names_its_ca_and_serves_https(tmp_path: Path) -> None:
    plan = plan_lab(2, lab_id="abc", base_port=20000, no_vm=True, redfish=True)
    ca = make_lab_tls(tmp_path)
    assert ca == tmp_path / "tls" / "ca.pem" and (tmp_path / "tls" / "bmc.key").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["bmc.key", "bmc.pem", "ca.pem"]  # no CA key kept
    inv = parse_inventory(render_inventory(plan, "pw", ca_file=ca), tmp_path / "inventory.yaml")
    bmc = inv.host("lab-n01").endpoint
    assert (bmc.protocol, bmc.port, bmc.verify_tls, bmc.ca_file) == (BmcProtocol.REDFISH, 20000, True, str(ca))
    [cfg] = serve_configs(plan, tmp_path, "pw")
    assert {(b.protocol, b.tls_cert, b.tls_key) for b in cfg.bmcs} == {
        ("redfish", str(tmp_path / "tls" / "bmc.pem"), str(tmp_path / "tls" / "bmc.key"))}
    ipmi = plan_lab(1, lab_id="abc", base_port=20000, no_vm=True)
    assert "bmc_ca_file" not in render_inventory(ipmi, "pw", ca_file=ca)  # an IPMI lab names no CA
    assert serve_configs(ipmi, tmp_path, "pw")[0].bmcs[0].protocol == "ipmi"


def test_shards_beyond_select_limit() -> None:
    plan = plan_lab(1000, lab_id="abc", base_port=20000, no_vm=True)
    assert plan.shards == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"nodes": 0}, "at least 1"),
    ({"nodes": 40}, "--no-vm"),
    ({"nodes": 2, "boot_url": "ftp://x"}, "--boot-url"),
    ({"nodes": 2, "base_port": 80}, "outside"),
])
def test_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        plan_lab(lab_id="abc", **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"uefi": True}, "--uefi needs --bridge BR"),
    ({"secure_boot": True, "bridge": "br0"}, "--secure-boot needs --uefi"),
    ({"netns": "ns1"}, "--netns needs --bridge BR"),
    ({"uefi": True, "netns": "ns1"}, "--netns needs --bridge BR"),
    ({"no_vm": True, "uefi": True, "bridge": "br0"}, "--uefi, --bridge need QEMU machines"),
    ({"no_vm": True, "bridge": "br0"}, "--bridge need QEMU machines"),
    ({"bridge": "br0;reboot"}, "--bridge 'br0;reboot' is not an interface name"),
    ({"bridge": "a-bridge-name-too-long"}, "is not an interface name"),
    ({"bridge": "-br"}, "is not an interface name"),
    ({"bridge": "br0", "netns": "../etc"}, "--netns '../etc' is not a network namespace name"),
    ({"bridge": "br0", "netns": ""}, "is not a network namespace name"),
    ({"bridge": "br0", "netns": "ns x"}, "is not a network namespace name"),
])
def test_bad_firmware_and_network(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        plan_lab(2, lab_id="abc", **kwargs)


def test_uefi_lab_on_a_bridge_in_a_namespace(tmp_path: Path) -> None:
    plan = plan_lab(16, lab_id="0123abcd", base_port=20000, uefi=True, netns="gbt1-boot", bridge="br0")
    assert [n.tap for n in plan.nodes][:2] == ["gl0123abcd-01", "gl0123abcd-02"]
    assert all(len(n.tap or "") <= 15 for n in plan.nodes) and len({n.tap for n in plan.nodes}) == 16
    inv = parse_inventory(render_inventory(plan, "pw"), tmp_path / "inventory.yaml")
    assert {h.uefi for h in inv.select("lab")} == {True}
    [cfg] = serve_configs(plan, tmp_path, "pw")
    vm = cfg.bmcs[0].vm
    assert vm is not None
    assert (vm["firmware"], vm["netdev"], vm["netns"]) == ("uefi", "tap:gl0123abcd-01", "gbt1-boot")
    assert vm["uefi_vars"] == str(tmp_path / "nodes" / "lab-n01" / "OVMF_VARS.fd")
    assert "bootfile" not in vm and "tftp_dir" not in vm  # the bridge's DHCP says what to boot
    assert network_label(plan) == "bridge br0 in netns gbt1-boot"
    # what the BMC process builds from the JSON config: every path a Path, as start_vm needs
    spec = vm_spec(json.loads(json.dumps(cfg.dump()))["bmcs"][0]["vm"])
    assert spec.uefi_vars == tmp_path / "nodes" / "lab-n01" / "OVMF_VARS.fd" and spec.netns == "gbt1-boot"
    path_fields = [f.name for f in dataclasses.fields(VmSpec) if "Path" in str(f.type)]
    assert all(isinstance(getattr(spec, name), Path) for name in path_fields if getattr(spec, name) is not None)


@pytest.mark.parametrize(("kwargs", "firmware", "network", "tap"), [
    ({}, "bios", "user", None),
    ({"bridge": "br0"}, "bios", "bridge br0", "gl0123abcd-01"),  # a BIOS lab on a bridge: iPXE ROM, real DHCP
    ({"uefi": True, "bridge": "br0"}, "uefi", "bridge br0", "gl0123abcd-01"),
])
def test_firmware_and_network_plans(tmp_path: Path, kwargs: dict, firmware: str, network: str, tap: str | None) -> None:
    plan = plan_lab(1, lab_id="0123abcd", **kwargs)
    assert (plan.firmware, network_label(plan), plan.nodes[0].tap) == (firmware, network, tap)
    inv = parse_inventory(render_inventory(plan, "pw"), tmp_path / "inventory.yaml")
    assert inv.host(plan.nodes[0].name).uefi is (firmware == "uefi")
    vm = serve_configs(plan, tmp_path, "pw")[0].bmcs[0].vm
    assert vm is not None and ("uefi_vars" in vm) is (firmware == "uefi")
    assert vm.get("netdev", "user") == ("user" if tap is None else f"tap:{tap}")


# A machine carries out an override only in a boot mode its firmware has (OVMF here has no legacy CSM,
# SeaBIOS no UEFI); anything else boots the default order, the disk.
@pytest.mark.parametrize(("device", "uefi", "firmware", "netboots"), [
    ("network", True, "uefi", True),
    ("network", False, "uefi", False),
    ("network", False, "bios", True),
    ("network", True, "bios", False),
    ("hd", True, "uefi", False),
    ("default", False, "bios", False),
])
def test_honoured_boot(device: str, uefi: bool, firmware: str, netboots: bool) -> None:
    assert honoured_boot(device, uefi_override=uefi, firmware=firmware) is netboots


def test_overrides_are_kept_and_one_time_ones_consumed() -> None:
    m = SimMachine(SimOptions(), random.Random(0))
    m.set_override("network", persistent=False, uefi=True)
    assert (m.bootdev, m.uefi) == ("network", True)
    m.power_on()
    assert (m.bootdev, m.uefi) == ("default", False)  # consumed by the boot
    m.set_override("hd", persistent=True, uefi=False)
    m.reset()
    assert m.bootdev == "hd"  # persistent: kept
    assert m.describe()["overrides"] == ["network once uefi", "hd persistent legacy"]
    for _ in range(30):
        m.set_override("network", persistent=False, uefi=False)
    assert len(m.overrides) == MAX_OVERRIDES_KEPT


def test_secure_boot_lab_says_so_in_its_inventory_and_machines(tmp_path: Path) -> None:
    plan = plan_lab(1, lab_id="0123abcd", uefi=True, bridge="br0", secure_boot=True)
    doc = yaml.safe_load(render_inventory(plan, "pw"))
    [rack] = doc["all"]["children"]["lab"]["children"].values()
    assert rack["hosts"]["lab-n01"]["secure_boot"] is True
    [cfg] = serve_configs(plan, tmp_path, "pw")
    assert vm_spec(json.loads(json.dumps(cfg.dump()))["bmcs"][0]["vm"]).secure_boot is True
    plain = plan_lab(1, lab_id="0123abcd", uefi=True, bridge="br0")
    assert "secure_boot" not in render_inventory(plain, "pw")  # inventories of other labs stay as they were
