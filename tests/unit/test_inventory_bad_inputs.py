"""Bad inventories, one row each: exit 2, one ``golden: error:`` line naming the file, host and var, no traceback.

Every row runs the real CLI entry point (``toolkit.cli.main``) on an inventory folder Ansible
reads (INI, YAML, group_vars, host_vars), so the message is checked as the operator sees it.
The BMC rows run ``golden power``: a UDP socket stands where the BMC would be, and must hear nothing.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret

from toolkit.cli import main

VAULT_PW = "vault-s3cret"


def _vault(plain: str, indent: int = 8) -> str:
    secret = VaultSecret(VAULT_PW.encode())
    text = VaultLib([("default", secret)]).encrypt(plain, secret).decode()
    return "\n".join(" " * indent + line for line in text.splitlines())


def _host(body: str) -> dict[str, str]:
    return {"hosts.yml": "all:\n  children:\n    rack1:\n      hosts:\n        n1:\n" + body}


# (id, files under the inventory folder, extra argv, substrings of the one error line)
CASES = [
    ("bad-mac", _host('          mac: "zz:12"\n'), [], ["hosts.yml:6", "host n1", "mac", "not a MAC"]),
    ("mac-as-number", _host("          mac: 52:54:00:00:01:01\n"), [], ["hosts.yml:6", "host n1", "mac is the number"]),
    ("ini-bad-mac", {"hosts.ini": "[rack1]\nn1 mac=52:54:00:zz:01:01\n"}, [], ["hosts.ini:2", "host n1", "mac"]),
    ("shared-mac", {"hosts.ini": '[rack1]\nn1 mac="52:54:00:00:01:01"\nn2 mac="52:54:00:00:01:01"\n'}, [],
     ["hosts.ini:3", "host n2", "mac 52:54:00:00:01:01 is also host n1"]),
    ("port-out-of-range", {**_host("          bmc_address: 10.0.0.1\n"), "host_vars/n1.yml": "bmc_port: 70000\n"}, [],
     ["host_vars/n1.yml:1", "host n1", "bmc_port 70000 is outside 1..65535"]),
    ("port-not-a-number", {**_host("          bmc_address: 10.0.0.1\n"), "group_vars/rack1.yml": "bmc_port: abc\n"},
     [], ["group_vars/rack1.yml:1", "host n1", "bmc_port 'abc'"]),
    ("protocol", _host("          bmc_address: 10.0.0.1\n          bmc_protocol: snmp\n"), [],
     ["hosts.yml:7", "host n1", "bmc_protocol 'snmp'"]),
    ("ca-file-missing", _host("          bmc_address: 10.0.0.1\n          bmc_ca_file: nope/ca.pem\n"), [],
     ["hosts.yml:7", "host n1", "bmc_ca_file", "nope/ca.pem cannot be read: No such file"]),
    ("ca-file-a-folder", {**_host("          bmc_address: 10.0.0.1\n"), "group_vars/rack1.yml": "bmc_ca_file: .\n"},
     [], ["group_vars/rack1.yml:1", "host n1", "bmc_ca_file", "cannot be read: Is a directory"]),
    ("ca-file-not-pem", {**_host("          bmc_address: 10.0.0.1\n"), "host_vars/n1.yml": "bmc_ca_file: ../ca.txt\n",
                         "ca.txt": "not a certificate\n"}, [],
     ["host_vars/n1.yml:1", "host n1", "bmc_ca_file", "ca.txt holds no PEM certificate"]),
    ("ca-file-a-list", _host("          bmc_address: 10.0.0.1\n          bmc_ca_file: [a.pem]\n"), [],
     ["hosts.yml:7", "host n1", "bmc_ca_file must be a string"]),
    ("verify-word", _host("          bmc_address: 10.0.0.1\n          bmc_verify: 'no'\n"), [],
     ["hosts.yml:7", "host n1", "bmc_verify 'no' is not a boolean"]),
    ("verify-number", {"hosts.ini": "[rack1]\nn1 bmc_address=10.0.0.1 bmc_verify=0\n"}, [],
     ["hosts.ini:2", "host n1", "bmc_verify 0 is not a boolean"]),
    ("image-no-ref", _host("          image: web\n"), [], ["hosts.yml:6", "host n1", "image 'web'"]),
    ("image-no-name", _host('          image: "@dev"\n'), [], ["hosts.yml:6", "host n1", "image '@dev'"]),
    ("image-traversal", _host('          image: "../../etc@passwd"\n'), [], ["host n1", "image '../../etc@passwd'"]),
    ("uefi-list", _host("          uefi: [1]\n"), [], ["hosts.yml:6", "host n1", "uefi [1] is not a boolean"]),
    ("uefi-word", {"hosts.ini": "[rack1]\nn1 uefi=maybe\n"}, [], ["hosts.ini:2", "host n1", "uefi 'maybe'"]),
    ("install-unknown", _host("          install: usb\n"), [],
     ["hosts.yml:6", "host n1", "install 'usb' must be one of ram, disk"]),
    ("install-ini-capitals", {"hosts.ini": "[rack1]\nn1 install=DISK\n"}, [],
     ["hosts.ini:2", "host n1", "install 'DISK' must be one of ram, disk"]),
    ("install-a-list", {**_host("          uefi: true\n"), "group_vars/rack1.yml": "install: [disk]\n"}, [],
     ["group_vars/rack1.yml:1", "host n1", "install must be a string"]),
    ("disk-slot-size-no-unit", {**_host("          install: disk\n"), "host_vars/n1.yml": "disk_slot_size: 4096\n"},
     [], ["host_vars/n1.yml:1", "host n1", "disk_slot_size '4096' is not a size"]),
    ("disk-esp-too-small", _host("          install: disk\n          disk_esp_size: 1M\n"), [],
     ["hosts.yml:7", "host n1", "disk_esp_size '1M' is below the least allowed, 64M"]),
    ("disk-device-not-a-path", {**_host("          install: disk\n"), "group_vars/rack1.yml": "disk_device: sda\n"},
     [], ["group_vars/rack1.yml:1", "host n1", "disk_device 'sda' must be 'auto' or a device path"]),
    ("disk-data-mount-root", _host("          install: disk\n          disk_data_mount: /\n"), [],
     ["hosts.yml:7", "host n1", "disk_data_mount '/' must be an absolute path"]),
    ("disk-boot-tries-zero", _host("          disk_boot_tries: 0\n"), [],
     ["hosts.yml:6", "host n1", "disk_boot_tries 0 must be a whole number from 1 to 16"]),
    ("disk-boot-tries-bool", {"hosts.ini": "[rack1]\nn1 disk_boot_tries=yes\n"}, [],
     ["hosts.ini:2", "host n1", "disk_boot_tries 'yes' must be a whole number"]),
    ("vault-no-password", {**_host("          bmc_address: 10.0.0.1\n"),
                           "host_vars/n1.yml": f"bmc_password: !vault |\n{_vault('pw', 2)}\n"}, [],
     ["host_vars/n1.yml:1", "host n1", "bmc_password", "no vault password"]),
    ("vault-wrong-password", {**_host("          bmc_address: 10.0.0.1\n"),
                              "host_vars/n1.yml": f"bmc_password: !vault |\n{_vault('pw', 2)}\n"},
     ["--vault-password-file", "{tmp}/wrong-pass.sh"],
     ["host_vars/n1.yml:1", "host n1", "bmc_password", "cannot decrypt"]),
    ("vault-malformed", _host("          bmc_address: 10.0.0.1\n          bmc_password: !vault |\n"
                              "            $ANSIBLE_VAULT;1.1;AES256\n            zzzz\n"),
     ["--vault-password-file", "{tmp}/right-pass.sh"], ["hosts.yml:7", "host n1", "bmc_password", "cannot decrypt"]),
    ("template-undefined", _host('          bmc_address: "{{ oob_ip }}"\n'), [],
     ["hosts.yml:6", "host n1", "bmc_address", "'oob_ip' is undefined"]),
    ("recursive-alias", _host("          a: &x [*x]\n"), [], ["hosts.yml", "recursion"]),
    ("deep-nesting", _host("          x: " + "[" * 5000 + "]" * 5000 + "\n"), [], ["hosts.yml", "nesting"]),
    ("not-utf8", {"hosts.yml": b"all:\n  hosts:\n    n\xff\xfe1: {}\n"}, [], ["hosts.yml"]),
    ("bad-yaml", {"hosts.yml": "all: {hosts: {n1: {a: 1}\n"}, [], ["hosts.yml", "YAML"]),
    ("missing-file", {}, ["-i", "{tmp}/nope.yml"], ["nope.yml", "not found"]),
    ("no-match", _host("          mac: \"52:54:00:00:01:01\"\n"), ["rack9"], ["rack9", "matches no host"]),
]


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _scripts(tmp: Path) -> None:
    for name, pw in (("right-pass.sh", VAULT_PW), ("wrong-pass.sh", "not-it")):
        script = tmp / name
        script.write_text(f"#!/bin/sh\necho {pw}\n")
        script.chmod(0o700)


def _run(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    _, err = capfd.readouterr()
    return rc, err


@pytest.fixture(autouse=True)
def _no_vault_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for env in ("ANSIBLE_VAULT_PASSWORD_FILE", "GOLDEN_VAULT_PASSWORD_FILE", "ANSIBLE_VAULT_IDENTITY_LIST"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("GOLDEN_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize(("files", "extra", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_inventory(tmp_path: Path, capfd: pytest.CaptureFixture[str], files: dict, extra: list[str],
                       expected: list[str]) -> None:
    inv = tmp_path / "inv"
    inv.mkdir()
    _write(inv, files)
    _scripts(tmp_path)
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    argv = ["--home", str(tmp_path / "home"), "inventory"]
    argv += extra if "-i" in extra else ["-i", str(inv), *extra]
    rc, err = _run(argv, capfd)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert [line for line in lines if line.startswith("golden: error:")] == lines[:1], err
    assert all(line.startswith("hint:") for line in lines[1:]), err
    for needle in expected:
        assert needle in lines[0], (needle, lines[0])
    assert VAULT_PW not in err and "$ANSIBLE_VAULT" not in err


@pytest.mark.parametrize("verb", [["power", "all", "status"], ["bootdev", "all", "pxe"]])
def test_missing_bmc_address_stops_before_any_bmc(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                   verb: list[str]) -> None:
    bmc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bmc.bind(("127.0.0.1", 0))
    bmc.setblocking(False)
    port = bmc.getsockname()[1]
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[rack1]\nn1 bmc_address=127.0.0.1 bmc_port={port} bmc_user=admin bmc_password=pw\nn2 mac=x\n"
                   .replace("mac=x", 'mac="52:54:00:00:01:02"'))
    rc, err = _run(["--home", str(tmp_path / "home"), *verb, "-i", str(inv)], capfd)
    assert rc == 2 and "Traceback" not in err
    assert err.splitlines()[0].startswith("golden: error:") and "hosts.ini: host n2: bmc_address is not set" in err
    with pytest.raises(BlockingIOError):
        bmc.recv(1024)  # nothing was sent to n1's BMC either
    bmc.close()
