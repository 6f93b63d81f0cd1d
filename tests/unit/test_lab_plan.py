"""plan_lab and the lab inventory (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.core.errors import InputError
from toolkit.inventory.hosts import parse_inventory
from toolkit.lab.machines import plan_lab, render_chain_script, render_inventory, serve_configs


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
