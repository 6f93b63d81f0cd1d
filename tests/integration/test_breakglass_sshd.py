"""Break-glass against a real OpenSSH sshd on loopback, configured as the hardening role configures a node.

The sshd configuration is the role's own drop-in (rendered from its template) behind the few
lines a test on this machine needs (port, host key, the CA and principals paths in the test's
folder); the principals file is written by the role's real ``golden-principals`` from a kernel
command line naming node1's MAC. ``golden break-glass`` signs with ``ssh-keygen -s``; the test
shows sshd accepts node1's certificate, refuses node2's and refuses node1's once its TTL is over.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest

from tests.fixtures.boot import make_build, write_inventory
from tests.fixtures.common import ROOT, free_port
from tests.fixtures.ssh import ssh_with_cert
from toolkit.cli import main
from toolkit.core.run import kill_group, run, spawn
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SSHD = Path("/usr/sbin/sshd")
MAC1, MAC2 = "52:54:00:15:0b:01", "52:54:00:15:0b:02"
TTL_S = 6
ROLE = ROOT / "roles" / "hardening"


def golden(capsys, home: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return rc, out, err


def role_dropin(ca_pub: str) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), keep_trailing_newline=True)
    return env.get_template("golden-hardening.conf.j2").render(ansible_managed="rendered by the test",
                                                              hardening_ssh_ca_public_key=ca_pub)


def start_sshd(tmp: Path, ca_pub_path: Path, principals: Path) -> tuple[subprocess.Popen[bytes], int]:
    host_key = tmp / "ssh_host_ed25519_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], capture=True)
    port = free_port()
    config = tmp / "sshd_config"
    # sshd keeps the first value of each keyword: the test's paths first, then the role's drop-in as baked.
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {tmp / 'sshd.pid'}",
        f"TrustedUserCAKeys {ca_pub_path}", f"AuthorizedPrincipalsFile {principals}/%u",
        "StrictModes no",  # the test's folder is under /tmp (world-writable), which strict modes refuse
        "UsePAM yes", "LogLevel VERBOSE", "",
    ]) + role_dropin(ca_pub_path.read_text()))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    run([SSHD, "-t", "-f", config], capture=True)
    proc = spawn([SSHD, "-D", "-e", "-f", config], stdout=(tmp / "sshd.log").open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if "Server listening" in (tmp / "sshd.log").read_text(errors="replace"):
            return proc, port
        time.sleep(0.1)
    kill_group(proc)
    pytest.fail(f"sshd did not start: {(tmp / 'sshd.log').read_text(errors='replace')}")


def ssh(port: int, key: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    return ssh_with_cert(port, key, cert, "echo inside", timeout=30)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch) -> Iterator[tuple[Path, Path]]:
    if not SSHD.exists():
        pytest.fail("sshd is missing: apt-get install openssh-server (scripts/apt-packages.txt)")
    home = tmp_path / "home"
    make_build(Store(home / "store"), "base", "b1")
    inv = write_inventory(tmp_path / "inventory.yml", {"node1": (MAC1, "base@b1"), "node2": (MAC2, "base@b1")})
    monkeypatch.setenv("GOLDEN_INVENTORY", str(inv))
    monkeypatch.setenv("GOLDEN_USER", "alice")
    yield home, tmp_path


def test_certificate_opens_its_host_for_its_ttl_only(lab, capsys, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    home, tmp = lab
    key = tmp / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", key], capture=True)
    other = tmp / "other" / "id_ed25519.pub"
    other.parent.mkdir()
    other.write_text(Path(f"{key}.pub").read_text())

    rc, out, err = golden(capsys, home, "--debug", "--json", "break-glass", "node1", "--reason", "INC-7: disk full",
                          "--ttl", f"{TTL_S}s", "--pubkey", f"{key}.pub")
    assert rc == 0, err
    issued = json.loads(out)
    granted_at = time.time()
    ca_key = home / "ssh-ca" / "breakglass_ca"
    assert (ca_key.stat().st_mode & 0o777, ca_key.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    secret_lines = ca_key.read_text().splitlines()[1:-1]
    said = out + err + caplog.text
    assert f"-s {ca_key} " in caplog.text  # ssh-keygen got the key's path (logged with --debug) ...
    assert secret_lines and not any(line in said for line in secret_lines)  # ... and the key itself never
    assert issued["grant"]["principal"] == f"golden-breakglass@{MAC1}"
    cert = Path(issued["certificate"])
    assert cert == tmp / "id_ed25519-cert.pub"
    shown = run(["ssh-keygen", "-L", "-f", cert], capture=True).stdout
    assert f"Serial: {issued['grant']['id']}" in shown and f"golden-breakglass@{MAC1}" in shown
    assert shown.split("Extensions:")[1].split() == ["permit-pty"], shown  # no forwarding unless asked

    rc, out, err = golden(capsys, home, "--json", "break-glass", "node2", "--reason", "INC-8", "--ttl", "1h",
                          "--pubkey", str(other), "--permit", "port-forwarding")
    assert rc == 0, err
    cert2 = Path(json.loads(out)["certificate"])
    shown2 = run(["ssh-keygen", "-L", "-f", cert2], capture=True).stdout
    assert sorted(shown2.split("Extensions:")[1].split()) == ["permit-port-forwarding", "permit-pty"], shown2

    # node1 as the hardening role sets it up: its principal from the kernel command line's golden.mac.
    cmdline = tmp / "cmdline"
    cmdline.write_text(f"boot=live golden.mac={MAC1.upper()} golden.build=b1\n")
    principals = tmp / "principals"
    run(["sh", ROLE / "files" / "golden-principals", "golden-breakglass", principals, cmdline], capture=True)
    assert (principals / "root").read_text() == f"golden-breakglass@{MAC1}\n"
    proc, port = start_sshd(tmp, home / "ssh-ca" / "breakglass_ca.pub", principals)
    try:
        accepted = ssh(port, key, cert)
        assert accepted.returncode == 0 and accepted.stdout.strip() == "inside", accepted.stderr
        wrong_host = ssh(port, key, cert2)
        assert wrong_host.returncode == 255 and "Permission denied" in wrong_host.stderr, wrong_host.stderr
        time.sleep(max(0.0, granted_at + TTL_S + 1 - time.time()))
        expired = ssh(port, key, cert)
        assert expired.returncode == 255 and "Permission denied" in expired.stderr, expired.stderr
    finally:
        kill_group(proc)
    log = (tmp / "sshd.log").read_text(errors="replace")
    assert f"ID golden-breakglass:node1:alice:{issued['grant']['id']} (serial {issued['grant']['id']})" in log, log
    # node2's certificate names another principal; node1's, once its TTL is over, is expired
    assert "Certificate does not contain an authorized principal" in log, log
    assert "Certificate invalid: expired" in log and "not yet valid" not in log, log

    # The grant is in the audit history, both hosts are tainted, the list shows both grants.
    rc, out, _ = golden(capsys, home, "--json", "fleet")
    assert {h["name"]: (h["state"], h["taint"]) for h in json.loads(out)} == {
        "node1": ("never-reported", "break-glass grant 1 to alice: INC-7: disk full"),
        "node2": ("never-reported", "break-glass grant 2 to alice: INC-8")}
    rc, out, _ = golden(capsys, home, "--json", "break-glass", "--list")
    assert [(g["id"], g["host"], g["user"]) for g in json.loads(out)] == [(2, "node2", "alice"), (1, "node1", "alice")]
    from toolkit.state.db import SQLiteStateDB
    with SQLiteStateDB(home / "state.db").read() as repo:
        (audit,) = repo.list_audit("node1")
    assert (audit.user, audit.action, audit.reason) == ("alice", "break-glass", "INC-7: disk full")
    assert f"serial 1, principal golden-breakglass@{MAC1}" in audit.detail
