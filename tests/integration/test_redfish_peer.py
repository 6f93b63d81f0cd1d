"""Independent peer: our Redfish client (directly and through the pool) against OpenStack's sushy-emulator.

sushy-emulator (PyPI sushy-tools) runs its fake driver on a loopback port, over HTTPS with a certificate
from a throwaway CA (tests/fixtures/tlsca) and HTTP basic auth from a bcrypt htpasswd file. What the emulator reports is
read back independently with urllib over verified TLS, not only through our own client.

Two properties of the fake driver shape the assertions: power changes land 1-11 s after the request
(so we poll), and a ForceRestart shows the machine off at once and on again later.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from tests.fixtures.common import free_port
from toolkit.bmc.base import BmcAuthError, BmcCommandError, BmcUnreachableError, BootDevice, PowerAction
from toolkit.bmc.control import bootdev_hosts, power_hosts
from toolkit.bmc.endpoint import BmcEndpoint, BmcProtocol
from toolkit.bmc.pool import BmcPool, RetryPolicy
from toolkit.bmc.redfish import RedfishClient
from toolkit.cli import main
from toolkit.core.run import kill_group, spawn
from toolkit.core.secret import Secret
from toolkit.lab.tlsca import BmcCa

pytestmark = pytest.mark.integration

SYSTEM_UUID = "5a1c0e3e-7d2b-4c1f-9e55-601dbeef0001"
CONFIG = """\
SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = {port}
SUSHY_EMULATOR_SSL_CERT = {cert!r}
SUSHY_EMULATOR_SSL_KEY = {key!r}
SUSHY_EMULATOR_AUTH_FILE = {auth!r}
SUSHY_EMULATOR_STATE_DIR = {state!r}
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_FAKE_SYSTEMS = [{{
    'uuid': {uuid!r},
    'name': 'rf-node1',
    'power_state': 'Off',
    'external_notifier': False,
    'nics': [{{'mac': '52:54:00:12:34:56', 'ip': '127.0.0.1'}}],
}}]
"""


@dataclass(frozen=True)
class Emulator:
    port: int
    pid: int
    password: Secret
    tls: ssl.SSLContext
    files: tuple[Path, ...]  # everything we wrote for it or it wrote
    ca: Path  # the CA that issued its certificate

    @property
    def log(self) -> Path:
        """Its output: werkzeug's access log, one line per request (the record of power actions)."""
        return self.files[2]

    def host(self, name: str = "rf1", *, password: Secret | None = None, port: int | None = None,
             verify_tls: bool = False) -> BmcEndpoint:
        return BmcEndpoint(name=name, address="127.0.0.1", port=port or self.port, protocol=BmcProtocol.REDFISH,
                           user="admin", password=password or self.password, verify_tls=verify_tls)

    def system(self) -> dict[str, Any]:
        """The system resource as the emulator reports it, read without our client."""
        return self._get(f"/redfish/v1/Systems/{SYSTEM_UUID}")

    def _get(self, path: str, auth: bool = True) -> dict[str, Any]:
        req = urllib.request.Request(f"https://127.0.0.1:{self.port}{path}")
        if auth:
            token = base64.b64encode(f"admin:{self.password.reveal()}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, context=self.tls, timeout=10) as rsp:
            return json.load(rsp)



def _contains(data: str | bytes, secret: Secret) -> bool:
    """Whether ``secret`` occurs in ``data``; takes a Secret so a failing assert cannot print it."""
    needle = secret.reveal()
    return (needle.encode() in data) if isinstance(data, bytes) else (needle in data)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    binary = Path(sys.executable).with_name("sushy-emulator")
    assert binary.exists(), f"{binary} missing: pip install 'sushy-tools>=2.2' (the dev extra)"
    d = tmp_path_factory.mktemp("sushy")
    cert, key = d / "cert.pem", d / "key.pem"
    ca = BmcCa.create(d / "lab-ca.pem")
    ca.issue("127.0.0.1", cert, key)
    password = Secret("rf-" + secrets.token_urlsafe(12))
    # sushy-emulator accepts only bcrypt entries; cost 4 keeps each request's check cheap
    auth = d / "htpasswd"
    auth.write_text("admin:" + bcrypt.hashpw(password.reveal().encode(), bcrypt.gensalt(rounds=4)).decode() + "\n")
    auth.chmod(0o600)
    port = free_port()
    conf = d / "emulator.conf"
    conf.write_text(CONFIG.format(port=port, cert=str(cert), key=str(key), auth=str(auth),
                                  state=str(d / "state"), uuid=SYSTEM_UUID))
    tls = ssl.create_default_context(cafile=str(ca.pem))
    log_path = d / "emulator.log"
    log = open(log_path, "wb")
    proc = spawn([binary, "--config", conf], stdout=log)
    emu = Emulator(port=port, pid=proc.pid, password=password, tls=tls, files=(conf, auth, log_path), ca=ca.pem)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sushy-emulator exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
            try:
                emu._get("/redfish/v1/", auth=False)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield emu
    finally:
        kill_group(proc)
        log.close()


def _wait_power(client: RedfishClient, want: str, seconds: float = 20.0) -> list[str]:
    """Poll until the client reads ``want``; return every state read on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while True:
        seen.append(client.get_power())
        if seen[-1] == want or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


@pytest.mark.timeout(120)
def test_power_round_trip(emulator: Emulator) -> None:
    client = RedfishClient(emulator.host())
    assert client.get_power() == "off"
    assert emulator.system()["PowerState"] == "Off"

    client.set_power(PowerAction.ON)
    assert _wait_power(client, "on")[-1] == "on"
    assert emulator.system()["PowerState"] == "On"

    # The fake driver applies a ForceRestart at int(now) + 1..11 s: start just after a second boundary so
    # the "off" in between lasts at least half a second and the next read sees it.
    while time.time() % 1 > 0.5:
        time.sleep(0.05)
    client.set_power(PowerAction.CYCLE)
    seen = _wait_power(client, "on")
    assert seen[0] == "off" and seen[-1] == "on", seen
    assert emulator.system()["PowerState"] == "On"
    client.close()

    # through the pool in worker processes, as `golden power` runs it; then a status read in threads
    with BmcPool(processes=1) as pool:
        report = power_hosts([emulator.host()], PowerAction.OFF, pool=pool, settle=20)
    assert report.ok, report.results
    assert report.results[0].power == "off" and report.results[0].attempts == 1
    assert emulator.system()["PowerState"] == "Off"
    with BmcPool(workers=2) as pool:
        outcomes = pool.map([emulator.host("rf1"), emulator.host("rf1-again")], lambda c: c.get_power())
    assert [(o.ok, o.value) for o in outcomes] == [(True, "off"), (True, "off")]


@pytest.mark.timeout(60)
def test_boot_device_round_trip(emulator: Emulator) -> None:
    client = RedfishClient(emulator.host())
    assert client.get_bootdev().device == "disk"  # the fake driver's default; this read also warms pyghmi's cache

    client.set_bootdev(BootDevice.PXE)
    setting = client.get_bootdev()
    assert setting.device == "pxe" and setting.uefi is False
    # sushy-emulator ignores BootSourceOverrideEnabled and always reports "Continuous" (see the NOTE in
    # sushy_tools/emulator/main.py, system_resource), so a one-time override reads back as persistent here.
    # A real BMC reports "Once" and get_bootdev() gives persistent=False.
    assert setting.persistent is True
    boot = emulator.system()["Boot"]
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideMode"]) == ("Pxe", "Legacy")

    client.set_bootdev(BootDevice.DISK, persistent=True, uefi=True)
    setting = client.get_bootdev()
    assert (setting.device, setting.persistent, setting.uefi) == ("disk", True, True)
    boot = emulator.system()["Boot"]
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideEnabled"],
            boot["BootSourceOverrideMode"]) == ("Hdd", "Continuous", "UEFI")

    # through the pool, as `golden bootdev` runs it
    with BmcPool(processes=1) as pool:
        report = bootdev_hosts([emulator.host()], BootDevice.PXE, pool=pool)
    assert report.ok and report.results[0].bootdev == "pxe", report.results
    assert client.get_bootdev().device == "pxe"
    assert emulator.system()["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    assert client.get_health() == {"health": "ok"}
    client.close()


@pytest.mark.timeout(60)
def test_typed_errors(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = Secret("not-it-" + secrets.token_hex(4))
    bad = emulator.host("rf-badpw", password=wrong)
    gone = emulator.host("rf-gone", port=free_port())

    with pytest.raises(BmcAuthError) as auth:
        RedfishClient(bad).get_power()
    with pytest.raises(BmcUnreachableError) as unreachable:
        RedfishClient(gone).get_power()
    # verifying TLS against the system's CAs, which do not include the lab's: a final error, not "did not answer"
    with pytest.raises(BmcCommandError) as untrusted:
        RedfishClient(emulator.host("rf-tls", verify_tls=True)).get_power()
    assert type(untrusted.value) is BmcCommandError and not untrusted.value.retryable

    assert str(auth.value).startswith("rf-badpw: BMC 127.0.0.1 rejected the login")
    assert str(unreachable.value).startswith(f"rf-gone: BMC 127.0.0.1:{gone.port} did not answer")
    assert str(untrusted.value).startswith(f"rf-tls: BMC 127.0.0.1:{emulator.port} presented a TLS certificate")
    for exc in (auth, unreachable, untrusted):
        text = str(exc.value)
        assert "\n" not in text
        assert not _contains(text, wrong) and not _contains(text, emulator.password)

    # through the pool: the wrong password is final at once, no answer is retried
    with BmcPool(retry=RetryPolicy(attempts=2, base_delay=0.05)) as pool:
        outcomes = pool.map([bad, gone], lambda c: c.get_power())
    assert [(o.host, o.ok, o.error, o.attempts) for o in outcomes] == [
        ("rf-badpw", False, "BmcAuthError", 1), ("rf-gone", False, "BmcUnreachableError", 2)]
    assert outcomes[0].message == str(auth.value)
    assert not _contains(caplog.text, wrong) and not _contains(caplog.text, emulator.password)


@pytest.mark.timeout(60)
def test_password_in_no_argv_or_file(emulator: Emulator) -> None:
    # exercise the peer once more so a client is live while we look
    client = RedfishClient(emulator.host())
    assert client.get_power() in ("on", "off")
    own = Path(f"/proc/{emulator.pid}/cmdline").read_bytes()
    assert b"sushy-emulator" in own and not _contains(own, emulator.password)
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            data = cmdline.read_bytes()
        except OSError:
            continue
        assert not _contains(data, emulator.password), f"password found in {cmdline}"
    # the emulator holds only a bcrypt hash, and does not log the password either
    for path in emulator.files:
        assert not _contains(path.read_bytes(), emulator.password), f"password found in {path}"
    client.close()


def _tls_inventory(emulator: Emulator, path: Path, wrong_ca: Path) -> Path:
    """Four hosts on the one emulator: verified against its CA, against another CA, and two not verified."""
    path.write_text(f"""\
all:
  vars:
    bmc_address: 127.0.0.1
    bmc_port: {emulator.port}
    bmc_protocol: redfish
    bmc_user: admin
    bmc_password: "{emulator.password.reveal()}"
  hosts:
    rf-ca: {{bmc_ca_file: {emulator.ca}}}
    rf-wrong-ca: {{bmc_ca_file: {wrong_ca}}}
    rf-nv1: {{bmc_verify: false}}
    rf-nv2: {{bmc_verify: false}}
""")
    path.chmod(0o600)
    return path


def _requests(emulator: Emulator, since: int) -> list[str]:
    return [line for line in emulator.log.read_text()[since:].splitlines() if '"GET ' in line or '"POST ' in line
            or '"PATCH ' in line]


def _golden(tmp_path: Path, capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]]]:
    rc = main(["--home", str(tmp_path / "home"), "--json", *argv, "-i", str(tmp_path / "hosts.yml")])
    out, _ = capfd.readouterr()
    return rc, json.loads(out)["results"]


@pytest.mark.timeout(120)
def test_the_inventory_decides_what_tls_is_trusted(emulator: Emulator, tmp_path: Path,
                                                    capfd: pytest.CaptureFixture[str],
                                                    caplog: pytest.LogCaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLDEN_CACHE", str(tmp_path / "cache"))
    caplog.set_level(logging.WARNING, logger="golden")
    _tls_inventory(emulator, tmp_path / "hosts.yml", BmcCa.create(tmp_path / "other-ca.pem", "someone else").pem)
    power_before = emulator.system()["PowerState"]

    # another CA: refused before any request reaches the BMC, once (retrying cannot help), naming the host
    start = emulator.log.stat().st_size
    rc, results = _golden(tmp_path, capfd, "power", "rf-wrong-ca", "cycle")
    assert rc == 1
    assert [(r["host"], r["ok"], r["error"], r["attempts"]) for r in results] == [
        ("rf-wrong-ca", False, "BmcCommandError", 1)]
    message = results[0]["message"]
    assert message == (f"rf-wrong-ca: BMC 127.0.0.1:{emulator.port} presented a TLS certificate that is not trusted "
                       f"(not issued by {tmp_path / 'other-ca.pem'} for 127.0.0.1: no chain leads to that CA)"), message
    assert "\n" not in message and not _contains(message, emulator.password)
    time.sleep(1)  # werkzeug writes its access line after the answer: give a stray request time to show
    assert _requests(emulator, start) == []  # nothing reached the BMC, so nothing was power-cycled
    assert emulator.system()["PowerState"] == power_before

    # its own CA: verified, and the commands reach the BMC
    start = emulator.log.stat().st_size
    rc, results = _golden(tmp_path, capfd, "power", "rf-ca", "status")
    assert rc == 0 and [(r["host"], r["ok"], r["power"]) for r in results] == [("rf-ca", True, power_before.lower())]
    assert any("/redfish/v1/Systems/" in line for line in _requests(emulator, start))
    assert not [r for r in caplog.records if "not verifying" in r.getMessage()]

    # bmc_verify: false works, with one warning for the run naming both hosts
    rc, results = _golden(tmp_path, capfd, "power", "rf-nv*", "status")
    assert rc == 0 and [(r["host"], r["ok"]) for r in results] == [("rf-nv1", True), ("rf-nv2", True)]
    assert [r.getMessage() for r in caplog.records if "not verifying" in r.getMessage()] == [
        "not verifying the TLS certificate of 2 Redfish BMC(s) (bmc_verify: false): rf-nv1, rf-nv2"]
