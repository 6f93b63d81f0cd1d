"""The inventory's Redfish TLS fields: ``bmc_verify`` (true unless set) and ``bmc_ca_file``, from the
host's vars to the BMC endpoint (fresh and from the cache), and the one warning a run gives for
the hosts it does not verify. Bad values are rows of test_inventory_bad_inputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from toolkit.bmc.endpoint import BmcEndpoint, BmcProtocol
from toolkit.bmc.tls import warn_unverified
from toolkit.inventory import fields
from toolkit.inventory.hosts import load_inventory
from toolkit.lab.tlsca import BmcCa

# (bmc_verify as the inventory holds it, what the endpoint gets); None: not set
VERIFY_CASES = [(None, True), (True, True), (False, False), ("true", True), ("False", False), (" TRUE ", True)]
BAD_VERIFY = ["yes", "no", "0", 1, 0, "", [True], {"a": 1}, 1.0]


@pytest.mark.parametrize(("value", "expected"), VERIFY_CASES)
def test_bmc_verify_reads_only_true_and_false(value: Any, expected: bool) -> None:
    assert fields.check_verify(value) is expected


@pytest.mark.parametrize("value", BAD_VERIFY)
def test_bmc_verify_refuses_anything_else(value: Any) -> None:
    with pytest.raises(fields.FieldError, match=r"^bmc_verify .* is not a boolean$") as err:
        fields.check_verify(value)
    assert err.value.var == "bmc_verify" and err.value.hint == "use true or false"


def test_bmc_ca_file_is_made_absolute_and_checked(tmp_path: Path) -> None:
    BmcCa.create(tmp_path / "ca.pem")
    assert fields.check_ca_file("ca.pem", tmp_path) == str(tmp_path / "ca.pem")
    assert fields.check_ca_file(str(tmp_path / "ca.pem"), Path("/elsewhere")) == str(tmp_path / "ca.pem")
    assert fields.check_ca_file(None, tmp_path) is None and fields.check_ca_file("", tmp_path) is None
    (tmp_path / "two.pem").write_bytes((tmp_path / "ca.pem").read_bytes() * 2)  # a bundle is fine
    assert fields.check_ca_file("two.pem", tmp_path) == str(tmp_path / "two.pem")


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot be read: No such file or directory"),
    (b"", "holds no PEM certificate"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "holds no PEM certificate"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "holds no PEM certificate"),
])
def test_bmc_ca_file_refusals(tmp_path: Path, content: bytes | None, problem: str) -> None:
    if content is not None:
        (tmp_path / "ca.pem").write_bytes(content)
    with pytest.raises(fields.FieldError) as err:
        fields.check_ca_file("ca.pem", tmp_path)
    assert str(err.value) == f"bmc_ca_file {tmp_path / 'ca.pem'} {problem}"
    assert err.value.hint and "bmc_ca_file" in err.value.hint


def _inventory(root: Path) -> Path:
    """rack1: n1 verified against the group's CA (a path relative to group_vars/), n2 not verified,
    n3 an IPMI host (the TLS fields mean nothing there); n4 Redfish on the system's CAs."""
    (root / "group_vars").mkdir(parents=True)
    BmcCa.create(root.parent / "bmc-ca.pem")  # outside: Ansible reads every file in the folder as inventory
    (root / "group_vars" / "rack1.yml").write_text("bmc_protocol: redfish\nbmc_ca_file: ../../bmc-ca.pem\n")
    (root / "hosts.yml").write_text(
        "all:\n  children:\n    rack1:\n      hosts:\n"
        "        n1: {bmc_address: 10.0.0.1}\n"
        "        n2: {bmc_address: 10.0.0.2, bmc_verify: false}\n"
        "        n3: {bmc_address: 10.0.0.3, bmc_protocol: ipmi, bmc_verify: false}\n"
        "  hosts:\n    n4: {bmc_address: 10.0.0.4, bmc_protocol: redfish}\n")
    return root


@pytest.mark.parametrize("cached", [False, True], ids=["resolved", "cached"])
def test_the_endpoint_carries_the_tls_fields(tmp_path: Path, cached: bool) -> None:
    src = _inventory(tmp_path / "inv")
    cache = tmp_path / "cache"
    load_inventory(src, cache_dir=cache)
    inv = load_inventory(src, cache_dir=cache, use_cache=cached)
    got = {h.name: (h.endpoint.protocol, h.endpoint.verify_tls, h.endpoint.ca_file) for h in inv.hosts}
    ca = str(tmp_path / "bmc-ca.pem")
    assert got == {"n1": (BmcProtocol.REDFISH, True, ca), "n2": (BmcProtocol.REDFISH, False, ca),
                   "n3": (BmcProtocol.IPMI, False, ca), "n4": (BmcProtocol.REDFISH, True, None)}


def _rf(name: str, verify: bool, protocol: BmcProtocol = BmcProtocol.REDFISH) -> BmcEndpoint:
    return BmcEndpoint(name, "10.0.0.9", 443, protocol, verify_tls=verify)


def test_one_warning_for_all_unverified_redfish_hosts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="golden.bmc")
    hosts = [_rf(f"n{i}", verify=i % 2 == 0) for i in range(16)] + [_rf("ipmi1", False, BmcProtocol.IPMI)]
    assert warn_unverified(hosts) == [f"n{i}" for i in range(1, 16, 2)]
    assert [r.getMessage() for r in caplog.records] == [
        "not verifying the TLS certificate of 8 Redfish BMC(s) (bmc_verify: false): n1, n3, n5, n7, n9 and 3 more"]
    caplog.clear()
    assert warn_unverified([_rf("a", True), _rf("ipmi1", False, BmcProtocol.IPMI)]) == []
    assert caplog.records == []
