"""Loading an Ansible YAML inventory through ansible-core: group and host vars, vault, errors naming file and host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret

from toolkit.core.config import Settings
from toolkit.core.secret import Secret
from toolkit.install.settings import DiskSettings, InstallMode
from toolkit.inventory.hosts import InventoryError, load_inventory, parse_inventory, resolve_inventory_path
from toolkit.inventory.selection import NoInventoryError
from toolkit.inventory.vault import VaultOptions

INVENTORY = """
all:
  vars:
    bmc_user: admin
    bmc_password: fleetwide
  children:
    rack1:
      vars:
        image: web@prod
      hosts:
        r1n1:
          mac: "52:54:00:00:01:01"  # unquoted, YAML (and so Ansible) reads a base-60 integer
          bmc_address: 10.1.0.1
        r1n2:
          mac: 52-54-00-00-01-02
          bmc_address: 10.1.0.2
          bmc_port: 6230
          uefi: true
          image: web@b-1234
    rack2:
      vars:
        bmc_protocol: redfish
        bmc_password: rack2pw
      hosts:
        r2n1:
          mac: "52:54:00:00:02:01"
          bmc_address: 10.2.0.1
    web:
      hosts:
        r1n1:
"""


def test_groups_and_vars(tmp_path: Path) -> None:
    inv = parse_inventory(INVENTORY, tmp_path / "inv.yaml")
    assert [h.name for h in inv.hosts] == ["r1n1", "r1n2", "r2n1"]
    r1n1 = inv.host("r1n1")
    assert r1n1.groups == ("rack1", "web")
    assert r1n1.bmc is not None and r1n1.bmc.port == 623 and r1n1.bmc.protocol == "ipmi"
    assert r1n1.bmc.user == "admin" and r1n1.bmc.password == Secret("fleetwide")
    assert r1n1.image == "web@prod" and r1n1.uefi is False
    r1n2 = inv.host("r1n2")
    assert r1n2.mac == "52:54:00:00:01:02" and r1n2.bmc is not None and r1n2.bmc.port == 6230
    assert r1n2.uefi is True and r1n2.image == "web@b-1234"
    r2n1 = inv.host("r2n1")
    assert r2n1.bmc is not None and r2n1.bmc.protocol == "redfish" and r2n1.bmc.port == 443
    assert r2n1.bmc.password.reveal() == "rack2pw"
    assert "rack2pw" not in repr(r2n1)
    assert r2n1.vars["bmc_password"] == "***"
    assert [h.name for h in inv.select("rack1:&web")] == ["r1n1"]
    assert [h.name for h in inv.select("all:!rack1")] == ["r2n1"]
    assert inv.by_mac("52:54:00:00:02:01") == r2n1


def test_no_match_is_input_error(tmp_path: Path) -> None:
    inv = parse_inventory(INVENTORY, tmp_path / "inv.yaml")
    with pytest.raises(InventoryError, match="matches no host") as exc:
        inv.select("rack9")
    assert exc.value.exit_code == 2


def _vault(plain: str, password: bytes) -> str:
    text = VaultLib([("default", VaultSecret(password))]).encrypt(plain, VaultSecret(password)).decode()
    return "\n".join("            " + line for line in text.splitlines())


def test_vault_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pwfile = tmp_path / "vault-pass"
    pwfile.write_text("s3cret-vault\n")
    text = f"""
all:
  hosts:
    n1:
      bmc_address: 127.0.0.1
      bmc_password: !vault |
{_vault("bmc-pw-42", b"s3cret-vault")}
"""
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    monkeypatch.delenv("GOLDEN_VAULT_PASSWORD_FILE", raising=False)
    with pytest.raises(InventoryError, match=r"inv.yaml:\d+: host n1: bmc_password.*no vault password"):
        load_inventory(path)
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(pwfile))
    host = load_inventory(path).host("n1")
    assert host.bmc is not None and host.bmc.password.reveal() == "bmc-pw-42"
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE")  # Ansible tries every password it is given
    monkeypatch.setenv("GOLDEN_VAULT_PASSWORD_FILE", str(wrong))
    with pytest.raises(InventoryError, match="host n1: bmc_password: cannot decrypt") as exc:
        load_inventory(path)
    assert "bmc-pw-42" not in str(exc.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("all:\n  hosts:\n    n1: {mac: zz}\n", "host n1: mac 'zz'"),
        ("all:\n  hosts:\n    n1: {bmc_address: a, bmc_protocol: snmp}\n", "host n1: bmc_protocol 'snmp'"),
        ("all:\n  hosts:\n    n1: {bmc_address: a, bmc_port: x}\n", "host n1: bmc_port 'x'"),
        ("all:\n  hosts:\n    n1: {image: web}\n", "host n1: image 'web'"),
        ("all: {hosts: {n1: {a: 1}\n", "YAML parsing failed"),
        ("all:\n  hosts:\n    n1: {mac: 52:54:00:00:01:01}\n", "host n1: mac is the number"),
        ("all:\n  hosts:\n    n1: {uefi: [1]}\n", "host n1: uefi [1] is not a boolean"),
    ],
)
def test_errors_name_file_and_host(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(InventoryError) as exc:
        load_inventory(path)
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="not found"):
        load_inventory(tmp_path / "nope.yaml")


def test_resolve_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(project=tmp_path, home=tmp_path, cache=tmp_path, inventory=tmp_path / "cfg.yaml")
    monkeypatch.setenv("GOLDEN_INVENTORY", str(tmp_path / "env.yaml"))
    assert resolve_inventory_path("cli.yaml", settings) == Path("cli.yaml")
    assert resolve_inventory_path(None, settings) == tmp_path / "env.yaml"
    monkeypatch.delenv("GOLDEN_INVENTORY")
    assert resolve_inventory_path(None, settings) == tmp_path / "cfg.yaml"
    monkeypatch.delenv("ANSIBLE_INVENTORY", raising=False)
    monkeypatch.setenv("ANSIBLE_CONFIG", str(tmp_path / "none.cfg"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoInventoryError, match="no inventory: tried -i"):
        resolve_inventory_path(None, settings.with_(inventory=None))


def test_several_sources_and_a_vars_only_folder(tmp_path: Path) -> None:
    # as `ansible -i hosts.ini -i site/`: a folder holding only group_vars/ still gives its vars
    (tmp_path / "hosts.ini").write_text('[rack7]\nn[1:3] bmc_address=10.0.0.1\n')
    (tmp_path / "site" / "group_vars").mkdir(parents=True)
    (tmp_path / "site" / "group_vars" / "rack7.yml").write_text("bmc_user: siteadmin\nimage: web@prod\n")
    (tmp_path / "more.yml").write_text('all:\n  hosts:\n    n9: {mac: "52:54:00:00:00:09"}\n')
    inv = load_inventory([tmp_path / "hosts.ini", tmp_path / "site", tmp_path / "more.yml"])
    assert sorted(h.name for h in inv.hosts) == ["n1", "n2", "n3", "n9"]  # in Ansible's order
    assert inv.host("n2").bmc is not None and inv.host("n2").bmc.user == "siteadmin"  # type: ignore[union-attr]
    assert inv.host("n2").image == "web@prod" and inv.host("n9").rack == ""
    assert [h.name for h in inv.select("rack7[1:]", limit="~n[23]")] == ["n2", "n3"]


def test_cache_follows_edits_and_holds_no_clear_password(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    src = tmp_path / "inv"
    (src / "host_vars").mkdir(parents=True)
    (src / "hosts.yml").write_text("all:\n  hosts:\n    n1: {bmc_address: 10.0.0.1, bmc_password: clear-pw-77, "
                                   "ansible_become_password: become-pw-88, nb: {api_token: tok-99}}\n")
    (src / "host_vars" / "n1.yml").write_text("bmc_port: 6230\n")
    first = load_inventory(src, cache_dir=cache_dir)
    [cached] = cache_dir.glob("inventory-*.json")
    assert cached.stat().st_mode & 0o777 == 0o600
    assert not [secret for secret in ("clear-pw-77", "become-pw-88", "tok-99") if secret in cached.read_text()]
    assert first.host("n1").vars["ansible_become_password"] == "***"
    again = load_inventory(src, cache_dir=cache_dir)
    assert again.host("n1").bmc == first.host("n1").bmc
    assert again.host("n1").bmc.password.reveal() == "clear-pw-77"  # type: ignore[union-attr]
    (src / "host_vars" / "n1.yml").write_text("bmc_port: 6231\n")  # a vars file beside the inventory
    assert load_inventory(src, cache_dir=cache_dir).host("n1").bmc.port == 6231  # type: ignore[union-attr]
    (cache_dir / "inventory-cache.key").unlink()  # the sealing key gone: the cache is resolved again
    assert load_inventory(src, cache_dir=cache_dir).host("n1").bmc.password.reveal() == "clear-pw-77"  # type: ignore[union-attr]


def test_golden_vars_that_are_templates_are_rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # as a play would see them: bmc_address from ansible_host, a vaulted password by reference
    pwfile = tmp_path / "vault-pass"
    pwfile.write_text("s3cret-vault\n")
    monkeypatch.setenv("GOLDEN_VAULT_PASSWORD_FILE", str(pwfile))
    path = tmp_path / "inv.yaml"
    path.write_text(f"""
all:
  vars:
    oob_net: 10.9.0
    vault_bmc_password: !vault |
{_vault("bmc-pw-templated", b"s3cret-vault")}
  hosts:
    n1:
      ansible_host: 10.0.0.5
      bmc_address: "{{{{ ansible_host }}}}"
      bmc_port: "{{{{ 620 + 3 }}}}"
      image: "web@{{{{ 'prod' }}}}"
      bmc_password: "{{{{ vault_bmc_password }}}}"
    n2:
      bmc_address: "{{{{ oob_net }}}}.{{{{ inventory_hostname[1:] }}}}"
""")
    inv = load_inventory(path)
    n1, n2 = inv.host("n1"), inv.host("n2")
    assert n1.bmc is not None and (n1.bmc.address, n1.bmc.port, n1.image) == ("10.0.0.5", 623, "web@prod")
    assert n1.bmc.password.reveal() == "bmc-pw-templated"
    assert n2.bmc is not None and n2.bmc.address == "10.9.0.2"


def test_script_and_constructed_sources(tmp_path: Path) -> None:
    # an inventory script (a CMDB exporter, say) and Ansible's constructed plugin grouping its hosts
    script = tmp_path / "cmdb.py"
    script.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                      "print(json.dumps({'cmdb': {'hosts': ['c1', 'c2']}, '_meta': {'hostvars': {"
                      "'c1': {'mac': '52:54:00:00:0c:01', 'row': 'r4'}, "
                      "'c2': {'mac': '52:54:00:00:0c:02', 'row': 'r5'}}}}))\n")
    script.chmod(0o755)
    constructed = tmp_path / "zz-constructed.yml"
    constructed.write_text("plugin: ansible.builtin.constructed\nstrict: true\n"
                           "keyed_groups:\n  - key: row\n    prefix: rack\n")
    cache_dir = tmp_path / "cache"
    inv = load_inventory([script, constructed], cache_dir=cache_dir)
    assert {h.name: h.rack for h in inv.hosts} == {"c1": "rack_r4", "c2": "rack_r5"}
    assert [h.name for h in inv.select("rack_r5")] == ["c2"]
    [cached] = cache_dir.glob("inventory-*.json")
    assert json.loads(cached.read_text())["expires"] is not None  # a script's answer is trusted for a TTL


def test_vault_id_with_an_executable_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("ANSIBLE_VAULT_PASSWORD_FILE", "GOLDEN_VAULT_PASSWORD_FILE", "ANSIBLE_VAULT_IDENTITY_LIST"):
        monkeypatch.delenv(env, raising=False)
    script = tmp_path / "vault-client.sh"
    script.write_text("#!/bin/sh\necho s3cret-vault\n")
    script.chmod(0o700)
    path = tmp_path / "inv.yaml"
    path.write_text(f"all:\n  hosts:\n    n1:\n      bmc_address: 127.0.0.1\n      bmc_password: !vault |\n"
                    f"{_vault('pw-from-script', b's3cret-vault')}\n")
    host = load_inventory(path, vault=VaultOptions(vault_ids=(f"prod@{script}",))).host("n1")
    assert host.bmc is not None and host.bmc.password.reveal() == "pw-from-script"


DISK_INVENTORY = """
all:
  children:
    rack1:
      vars:
        install: disk
        uefi: true
        disk_slot_size: 8G
      hosts:
        d1:
          mac: "52:54:00:00:03:01"
          disk_device: /dev/nvme0n1
          disk_boot_tries: "5"
        d2:
          mac: "52:54:00:00:03:02"
          disk_data_mount: /srv/data
          disk_esp_size: 1GiB
        r1:
          mac: "52:54:00:00:03:03"
          install: ram
"""


def test_install_mode_and_disk_settings_from_group_and_host_vars(tmp_path: Path) -> None:
    """Group vars set the mode and the slot size, host vars the rest; defaults fill the gaps; a RAM
    host carries no disk settings; a second (cached) load reads the same hosts."""
    path = tmp_path / "inv.yaml"
    path.write_text(DISK_INVENTORY)
    for _ in range(2):
        inv = load_inventory(path, cache_dir=tmp_path / "cache")
        d1, d2, r1 = inv.host("d1"), inv.host("d2"), inv.host("r1")
        assert d1.install == d2.install == InstallMode.DISK and r1.install == InstallMode.RAM
        assert d1.disk == DiskSettings(device="/dev/nvme0n1", slot_bytes=8 << 30, boot_tries=5)
        assert d2.disk == DiskSettings(slot_bytes=8 << 30, esp_bytes=1 << 30, data_mount="/srv/data")
        assert r1.disk is None
    assert parse_inventory(INVENTORY, tmp_path / "plain.yaml").host("r1n1").install == InstallMode.RAM
