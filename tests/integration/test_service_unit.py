"""golden-serve.service from ``golden pxe render``, checked by systemd itself: ``systemd-analyze verify``
(syntax, directives, the executable) and ``systemd-analyze security --offline`` (sandboxing score)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fixtures.boot import GOLDEN, golden_env
from toolkit.core.run import require, run

pytestmark = pytest.mark.integration

MAX_EXPOSURE = 2.5  # systemd's scale: 0 (locked down) .. 10 (unprotected); "OK" is below 3


def _render(tmp: Path, *args: str) -> str:
    out = tmp / "pxe"
    run([GOLDEN, "--home", "/var/lib/golden", "pxe", "render", "--out", str(out), "--server-url", "http://10.1.2.3",
         "--interface", "eth7", "--subnet", "10.1.2.0", *args], capture=True, env=golden_env())
    return str(out / "golden-serve.service")


@pytest.mark.parametrize("args", [
    [],
    ["--service-inventory", "/etc/golden/inventory", "--service-inventory", "/etc/golden/netbox.yml",
     "--vault-password-file", "/etc/golden/vault-pass"],
    ["--service-user", "golden", "--upstream", "0.0.0.0:80"],
], ids=["dynamic-user", "inventories-and-vault-credential", "dedicated-user-port-80"])
def test_unit_verifies_and_is_sandboxed(tmp_path: Path, args: list[str]) -> None:
    require("systemd-analyze", "systemd")
    unit = _render(tmp_path, *args)
    text = Path(unit).read_text()
    for directive in ("ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=golden", "ProtectHome=yes",
                      "SystemCallFilter=@system-service"):
        assert directive in text
    assert ("DynamicUser=yes" in text) == ("--service-user" not in args)
    res = run(["systemd-analyze", "verify", unit], capture=True, check=False)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr
    sec = run(["systemd-analyze", "security", "--offline=yes", unit], capture=True, check=False)
    score = re.search(r"Overall exposure level for golden-serve.service: ([0-9.]+)", sec.stdout)
    assert score and float(score.group(1)) <= MAX_EXPOSURE, sec.stdout[-2000:]


def test_vault_password_never_on_the_command_line(tmp_path: Path) -> None:
    text = Path(_render(tmp_path, "--vault-password-file", "/etc/golden/vault-pass")).read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert "vault" not in exec_start
    assert "LoadCredential=vault-password:/etc/golden/vault-pass" in text


def test_unit_values_are_checked(tmp_path: Path) -> None:
    res = run([GOLDEN, "pxe", "render", "--out", str(tmp_path / "o"), "--server-url", "http://10.0.0.1",
               "--interface", "eth0", "--subnet", "10.0.0.0", "--service-inventory", "/etc/x y"],
              capture=True, check=False, env=golden_env())
    assert res.returncode == 2 and "--service-inventory" in res.stderr and "Traceback" not in res.stderr
