"""golden reads an inventory folder exactly as the real ``ansible-inventory`` and ``ansible`` do.

The folder has an INI file with ranges and nested children, a YAML file, ``group_vars/`` and
``host_vars/``, and a vault-encrypted ``bmc_password`` whose password comes from an executable
vault script. The peers are the ``ansible-inventory`` and ``ansible`` of this venv.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
VAULT_PW = "peer-vault-pw"
BMC_PW = "bmc-clear-42"

INI = """\
[rack1]
web[01:04]

[rack2]
db[a:c] bmc_protocol=redfish

[rack1:vars]
bmc_user=admin
image=web@prod

[web:children]
rack1

[dc1:children]
web
rack2
"""

YAML = """\
all:
  children:
    dc2:
      children:
        rack3:
          hosts:
            edge1:
              mac: "52:54:00:00:03:01"
              bmc_address: 10.0.3.1
              uefi: true
            edge2:
              mac: "52-54-00-00-03-02"
              bmc_address: 10.0.3.2
              image: edge@b-20240101
"""


def _vaulted(plain: str) -> str:
    secret = VaultSecret(VAULT_PW.encode())
    text = VaultLib([("default", secret)]).encrypt(plain, secret).decode()
    return "bmc_password: !vault |\n" + "\n".join("  " + line for line in text.splitlines()) + "\n"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("peer")
    inv = root / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    (inv / "10-racks.ini").write_text(INI)
    (inv / "20-edge.yml").write_text(YAML)
    (inv / "group_vars" / "all.yml").write_text(_vaulted(BMC_PW))
    (inv / "group_vars" / "rack2.yml").write_text("bmc_port: 8443\nimage: db@b-1234\n")
    (inv / "group_vars" / "dc2").mkdir()
    (inv / "group_vars" / "dc2" / "bmc.yml").write_text("bmc_user: edgeadmin\nbmc_protocol: ipmi\n")
    for i, name in enumerate(["web01", "web02", "web03", "web04", "dba", "dbb", "dbc"]):
        (inv / "host_vars" / f"{name}.yml").write_text(f'mac: "52:54:00:00:01:{i:02x}"\nbmc_address: 10.0.1.{i + 1}\n')
    (inv / "host_vars" / "web02.yml").write_text('mac: "52:54:00:00:01:01"\nbmc_address: 10.0.1.2\n'
                                                 'uefi: "yes"\nbmc_port: 6230\n')
    script = root / "vault-pass.sh"
    script.write_text(f"#!/bin/sh\necho {VAULT_PW}\n")
    script.chmod(0o700)
    return inv, script


def _env(tmp: Path) -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp), "GOLDEN_CACHE": str(tmp / "cache"),
            "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp")}


def _golden(inventory: tuple[Path, Path], *args: str) -> list[dict[str, Any]]:
    inv, script = inventory
    res = subprocess.run([str(BIN / "golden"), "--json", "inventory", *args, "-i", str(inv),
                          "--vault-password-file", str(script)],
                         capture_output=True, text=True, env=_env(inv.parent), check=False)
    assert res.returncode == 0, res.stderr
    assert BMC_PW not in res.stdout + res.stderr
    return json.loads(res.stdout)


def _peer_groups(listing: dict[str, Any]) -> dict[str, set[str]]:
    """host -> every group above it, from ansible-inventory --list's graph."""
    def hosts_under(group: str) -> set[str]:
        body = listing.get(group, {})
        found = set(body.get("hosts", []))
        for child in body.get("children", []):
            found |= hosts_under(child)
        return found

    out: dict[str, set[str]] = {}
    for group in listing:
        if group in ("_meta", "all"):
            continue
        for host in hosts_under(group):
            out.setdefault(host, set()).add(group)
    return out


def _expected(name: str, hv: dict[str, Any], groups: set[str]) -> dict[str, Any]:
    """golden's fields computed from what ansible-inventory resolved (Ansible's boolean rules for uefi)."""
    from ansible.module_utils.parsing.convert_bool import boolean

    protocol = hv.get("bmc_protocol", "ipmi")
    return {
        "name": name, "groups": sorted(groups), "mac": hv["mac"].lower().replace("-", ":"),
        "bmc_address": hv["bmc_address"], "bmc_protocol": protocol,
        "bmc_port": int(hv.get("bmc_port", 443 if protocol == "redfish" else 623)),
        "bmc_user": hv.get("bmc_user", ""), "image": hv.get("image"), "uefi": boolean(hv.get("uefi", False)),
        "bmc_password_set": "bmc_password" in hv,
    }


def test_same_hosts_and_fields_as_ansible_inventory(inventory: tuple[Path, Path]) -> None:
    inv, script = inventory
    res = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inv), "--list", "--vault-password-file",
                          str(script)], capture_output=True, text=True, env=_env(inv.parent), check=True)
    listing = json.loads(res.stdout)
    hostvars = listing["_meta"]["hostvars"]
    groups = _peer_groups(listing)
    expected = {n: _expected(n, hv, groups.get(n, set())) for n, hv in hostvars.items()}
    got = {h["name"]: {k: h[k] for k in next(iter(expected.values()))} for h in _golden(inventory, "all")}
    assert len(expected) == 9
    assert got == expected
    by_name = {h["name"]: h for h in _golden(inventory, "all")}
    assert by_name["web02"]["rack"] == "rack1" and by_name["edge1"]["rack"] == "rack3"
    assert by_name["dba"]["bmc_port"] == 8443 and by_name["web02"]["uefi"] is True


# (pattern, --limit or None): each must select what `ansible PATTERN --list-hosts [--limit L]` does
PATTERNS = [
    ("all", None), ("rack1", None), ("web:&rack1", None), ("dc1:!rack2", None), ("rack1[0]", None),
    ("rack1[1:2]", None), ("rack1[-1]", None), ("rack1[2:]", None), ("~db[ab]", None), ("~(web0[13]|edge.*)", None),
    ("web*", None), ("dc1:dc2", None), ("all:!web02", None), ("rack2,edge1", None), ("!rack1", None),
    ("dc1:&~web0[12]:!web01", None), ("all", "rack1"), ("dc1", "~web0[12]"), ("all", "rack1[0:1]"),
    ("all", "!rack2"), ("dc2:rack2", "dbb,edge2"), ("web0?", None), ("~web0[", None), ("db?", None),
    ("edge1:web01:dbc", "dc1"),
]


def _ansible_hosts(inventory: tuple[Path, Path], pattern: str, limit: str | None) -> set[str]:
    inv, script = inventory
    argv = [str(BIN / "ansible"), pattern, "-i", str(inv), "--list-hosts", "--vault-password-file", str(script)]
    if limit:
        argv += ["--limit", limit]
    res = subprocess.run(argv, capture_output=True, text=True, env=_env(inv.parent), check=False)
    lines = res.stdout.splitlines()
    return {line.strip() for line in lines[1:] if line.strip()} if lines and "hosts (" in lines[0] else set()


@pytest.mark.parametrize(("pattern", "limit"), PATTERNS, ids=[f"{p}|{lim}" for p, lim in PATTERNS])
def test_patterns_select_what_ansible_selects(inventory: tuple[Path, Path], pattern: str, limit: str | None) -> None:
    want = _ansible_hosts(inventory, pattern, limit)
    assert want, "every pattern in the table should select something"
    got = {h["name"] for h in _golden(inventory, pattern, *(["--limit", limit] if limit else []))}
    assert got == want
