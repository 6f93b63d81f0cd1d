"""Wrong password, unreachable BMC, unsupported command: each its own typed error and one-line
message naming the host; no BMC password in any process's argv or in the logs meanwhile."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.fixtures.common import free_port
from tests.fixtures.lab import GoldenRunner
from toolkit.bmc.base import BmcAuthError, BmcUnreachableError, BmcUnsupportedError
from toolkit.bmc.endpoint import BmcEndpoint
from toolkit.bmc.ipmi import IpmiClient
from toolkit.core.secret import Secret
from toolkit.inventory.hosts import load_inventory

pytestmark = pytest.mark.integration



def _no_password_anywhere(password: str, logs: list[Path]) -> None:
    needle = password.encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            data = cmdline.read_bytes()
        except OSError:
            continue
        assert needle not in data, f"password found in {cmdline}"
    for log in logs:
        assert needle not in log.read_bytes(), f"password found in {log}"


@pytest.mark.timeout(300)
def test_typed_errors(golden: GoldenRunner, tmp_path: Path) -> None:
    golden.run("lab", "up", "--nodes", "2", "--no-vm")
    password = golden.lab_password
    inv = load_inventory(golden.home / "lab" / "inventory.yaml")
    good = inv.host("lab-n01")
    assert good.bmc is not None

    wrong = BmcEndpoint(name="bad-pw", address="127.0.0.1", port=good.bmc.port, user="admin", password=Secret("not-it"))
    with pytest.raises(BmcAuthError) as auth:
        IpmiClient(wrong).get_power()
    gone = BmcEndpoint(name="gone", address="127.0.0.2", port=free_port(socket.SOCK_DGRAM), user="admin",
                       password=Secret(password))
    with pytest.raises(BmcUnreachableError) as unreachable:
        IpmiClient(gone).get_power()
    with pytest.raises(BmcUnsupportedError) as unsupported:
        IpmiClient(good.endpoint).get_health()  # the virtual BMC has no sensor repository
    for exc, host in ((auth, "bad-pw"), (unreachable, "gone"), (unsupported, "lab-n01")):
        text = str(exc.value)
        assert text.startswith(f"{host}: ") and "\n" not in text
        assert password not in text and "not-it" not in text

    # the same through the CLI: exit 1, one line on stderr naming the host, no traceback
    inv_path = tmp_path / "wrong.yaml"
    inv_path.write_text((golden.home / "lab" / "inventory.yaml").read_text().replace(password, "not-it"))
    proc = golden.run("power", "lab-n01", "status", "-i", str(inv_path), check=False)
    assert proc.returncode == 1
    assert "lab-n01: BMC 127.0.0.1 rejected the login" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert "not-it" not in proc.stdout + proc.stderr

    _no_password_anywhere(password, sorted((golden.home / "lab").glob("*.log")))
