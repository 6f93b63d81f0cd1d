"""Publish, boot, promote, reassign, roll back: real QEMU machines (TCG, iPXE ROM) netboot what the
channels say, from `golden serve`, and their agents' reports mark observed == desired.

The first test's build is `baked_breakglass` (base trusting the test fleet's break-glass CA,
re-reporting every 10 s): after its first boot the test gets a break-glass certificate, logs in
through a loopback port forward, changes a file under /etc and waits for `golden drift` to name it;
the node's sshd refuses another host's certificate and this one's once its TTL is over. The host
stays tainted through a plain reboot of its build and is clean after a boot of another build.
Rollback needs a second build: it is
the same artifacts committed under another build id (hard links, a manifest naming the new id), so
which build the machine runs is visible in its report without a second multi-minute bake.
The last test reimages a UEFI lab machine (virtual IPMI BMC on loopback, its tap in a namespace's
bridge) with `golden reimage`; it boots through the real daemons `golden pxe render` configures
(dnsmasq proxyDHCP, TFTP, nginx) inside network namespaces.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.fixtures.bake import breakglass_ca_home
from tests.fixtures.boot import GOLDEN, ServeProcess, golden_env, start_golden_serve, write_inventory
from tests.fixtures.bootnet import BootNet, boot_network
from tests.fixtures.common import free_port
from tests.fixtures.lab import GoldenRunner
from tests.fixtures.ssh import ssh_with_cert
from toolkit.core.run import kill_group, run
from toolkit.lab.qemu import VmSpec, start_vm
from toolkit.rollout.execute import attempt_id
from toolkit.state.db import HostRow, SQLiteStateDB
from toolkit.store.artifacts import Build, Store

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

REPORT_TIMEOUT = 8 * 60.0
MAC = "52:54:00:3b:00:01"
MAC2 = "52:54:00:3b:00:02"  # node2: in the inventory, never booted (its certificate must not open node1)
IMAGE = "breakglass"
TTL_S = 75
DRIFT_TIMEOUT = 90.0  # the image re-reports every 10 s (+-20 %)


def golden(home: Path, *args: str) -> str:
    return run([GOLDEN, "--home", str(home), *args], capture=True, env=golden_env()).stdout


def link_build(src: Build, store: Store, build_id: str | None = None) -> Build:
    """Commit ``src`` into ``store`` by hard links; under ``build_id`` when given (a second build)."""
    staged = store.stage(src.image)
    for name in src.manifest.artifacts:
        os.link(src.path / name, staged / name)
    manifest = src.manifest
    if build_id is not None:
        manifest = manifest.model_copy(update={"build_id": build_id,
                                               "created_at": datetime.now(UTC).isoformat()})
    manifest.write(staged / "manifest.json")
    return store.commit(src.image, manifest.build_id, staged)


@dataclass
class Lab:
    home: Path
    work: Path
    inventory: Path
    serve: ServeProcess
    a: Build
    b: Build

    def host(self) -> HostRow | None:
        with SQLiteStateDB(self.home / "state.db").read() as repo:
            return repo.get_host("node1")

    def inventory_for(self, ref: str) -> None:
        write_inventory(self.inventory, {"node1": (MAC, ref), "node2": (MAC2, ref)})

    def fleet(self) -> dict[str, dict]:
        return {h["name"]: h for h in json.loads(golden(self.home, "--json", "fleet", "-i", str(self.inventory)))}

    def unverified(self) -> SimpleNamespace | None:
        """The last unverified observation of node1, shaped like a host row for ``wait_report``."""
        with SQLiteStateDB(self.home / "state.db").read() as repo:
            row = repo.get_unverified("node1")
        return SimpleNamespace(last_report_at=row.at, observed_build=row.build_id) if row else None

    def _attempt(self, tag: str, build: str, arm: bool) -> None:
        attempt = hashlib.sha256(tag.encode()).hexdigest()[:16]
        with SQLiteStateDB(self.home / "state.db").write() as repo:
            if arm:
                repo.arm_attempt("node1", attempt, build, time.time(), time.time() + REPORT_TIMEOUT + 60)
            else:
                repo.disarm_attempt("node1", attempt, time.time())

    def boot(self, expect: str, tag: str, then=None, reimage: bool = True) -> float:
        """Boot node1 from golden serve until its agent's report is accepted; return seconds to report.

        ``reimage``: within a reimage attempt armed just before, as ``golden reimage`` does, so the report
        is verified evidence; without, a plain reboot, whose report is only an unverified observation.
        ``then(ssh_port)`` runs while the machine is still up, its port 22 forwarded to ``ssh_port``.
        """
        serial = self.work / f"serial-{tag}.log"
        ssh_port = free_port()
        vm = VmSpec(name=f"golden-e2e-{tag}", mac=MAC, serial_log=serial, memory_mb=2048,
                    bootfile=f"{self.serve.url.replace('127.0.0.1', '10.0.2.2')}/boot/{MAC}.ipxe",
                    hostfwd=((ssh_port, 22),))
        seen = self.host if reimage else self.unverified
        before = seen()
        since = before.last_report_at if before and before.last_report_at else 0.0
        if reimage:
            self._attempt(tag, expect, arm=True)
        started = time.monotonic()
        proc = start_vm(vm)
        try:
            took = wait_report(seen, since, expect, proc, serial, started)
            if then is not None:
                then(ssh_port)
            return took
        finally:
            kill_group(proc)
            if reimage:
                self._attempt(tag, expect, arm=False)  # the attempt is over, as the controller ends it


def wait_report(host, since: float, expect: str, proc: subprocess.Popen[bytes], serial: Path,
                started: float) -> float:
    deadline = time.monotonic() + REPORT_TIMEOUT
    while time.monotonic() < deadline:
        row = host()
        if row is not None and row.last_report_at and row.last_report_at > since:
            assert row.observed_build == expect, (row, serial.read_text(errors="replace")[-3000:])
            return time.monotonic() - started
        if proc.poll() is not None:
            pytest.fail(f"QEMU exited {proc.returncode}: {serial.read_text(errors='replace')[-3000:]}")
        time.sleep(2)
    pytest.fail(f"no accepted report within {REPORT_TIMEOUT:.0f} s: {serial.read_text(errors='replace')[-4000:]}")


@pytest.fixture
def lab(baked_breakglass: Build, tmp_path: Path) -> Iterator[Lab]:
    home = tmp_path / "home"
    store = Store(home / "store")
    a = link_build(baked_breakglass, store)
    b = link_build(baked_breakglass, store, build_id=f"{baked_breakglass.build_id[:12]}-relinked")
    ca = home / "ssh-ca"  # the CA the image trusts, as this fleet's
    shutil.copytree(breakglass_ca_home() / "ssh-ca", ca)
    inv = write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, f"{IMAGE}@dev"), "node2": (MAC2, f"{IMAGE}@dev")})
    serve = start_golden_serve(home, inv, tmp_path / "serve.log")
    try:
        yield Lab(home, tmp_path, inv, serve, a, b)
    finally:
        serve.stop()


SSHD_TIMEOUT = 180.0
NOT_LISTENING = ("kex_exchange_identification", "Connection reset", "Connection refused", "Connection closed",
                 "Connection timed out")


def ssh_when_sshd_is_up(port: int, key: Path, cert: Path, command: str) -> subprocess.CompletedProcess[str]:
    """The agent reports before sshd listens (host keys are made at boot, slowly under TCG): until it does,
    QEMU's forward accepts and resets. Anything else (an answer, a refusal) is returned at once."""
    deadline = time.monotonic() + SSHD_TIMEOUT
    while True:
        result = ssh_with_cert(port, key, cert, command)
        if result.returncode != 255 or not any(x in result.stderr for x in NOT_LISTENING) \
                or time.monotonic() > deadline:
            return result
        time.sleep(3)


def break_glass_session(lab: Lab, ssh_port: int) -> None:
    """Criteria 1 and 2 on the booted node: a certificate opens it for its TTL, drift is seen, access taints."""
    key = lab.work / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e@laptop", "-f", key], capture=True)
    other = lab.work / "other" / "id_ed25519.pub"
    other.parent.mkdir()
    other.write_text(Path(f"{key}.pub").read_text())
    inv = ("-i", str(lab.inventory))
    issued = json.loads(golden(lab.home, "--json", "break-glass", "node1", "--reason", "e2e: change /etc",
                               "--ttl", f"{TTL_S}s", "--pubkey", f"{key}.pub", *inv))
    granted_at, serial, cert = time.time(), issued["grant"]["id"], Path(issued["certificate"])
    cert2 = Path(json.loads(golden(lab.home, "--json", "break-glass", "node2", "--reason", "e2e: other host",
                                   "--ttl", "1h", "--pubkey", str(other), *inv))["certificate"])
    changed = ssh_when_sshd_is_up(ssh_port, key, cert, "echo changed-by-hand >> /etc/motd && echo done")
    assert changed.returncode == 0 and changed.stdout.strip() == "done", changed.stderr
    wrong_host = ssh_with_cert(ssh_port, key, cert2, "true")
    assert wrong_host.returncode == 255 and "Permission denied" in wrong_host.stderr, wrong_host.stderr

    deadline = time.monotonic() + DRIFT_TIMEOUT
    while time.monotonic() < deadline:
        drift = json.loads(golden(lab.home, "--json", "drift", "node1", *inv))
        if any(d["path"] == "/etc/motd" for d in drift):
            break
        time.sleep(2)
    assert [(d["host"], d["path"], d["kind"]) for d in drift] == [("node1", "/etc/motd", "modified")], drift
    logins = json.loads(golden(lab.home, "--json", "drift", "--logins", *inv))
    assert [(x["host"], x["method"], x["serial"], x["grant_id"]) for x in logins] == [
        ("node1", "certificate", serial, serial)], logins
    fleet = lab.fleet()
    assert fleet["node1"]["state"] == "tainted" and fleet["node1"]["taint"].endswith("e2e: change /etc"), fleet
    with SQLiteStateDB(lab.home / "state.db").read() as repo:
        assert [(a.action, a.reason) for a in repo.list_audit("node1")] == [("break-glass", "e2e: change /etc")]

    time.sleep(max(0.0, granted_at + TTL_S + 2 - time.time()))
    expired = ssh_with_cert(ssh_port, key, cert, "true")
    assert expired.returncode == 255 and "Permission denied" in expired.stderr, expired.stderr


def test_publish_boot_promote_reassign_rollback(lab: Lab) -> None:
    a, b = lab.a, lab.b
    golden(lab.home, "publish", IMAGE, a.build_id, "--channel", "dev")
    checked: list[str] = []

    def fresh_then_break_glass(ssh_port: int) -> None:
        # A fresh boot is in-sync, never drifted: false drift would hide real drift.
        status = lab.fleet()
        assert status["node1"]["desired"] == status["node1"]["observed"] == a.build_id
        assert status["node1"]["state"] == "in-sync", status["node1"]
        break_glass_session(lab, ssh_port)
        checked.append("break-glass")

    t1 = lab.boot(a.build_id, "dev", then=fresh_then_break_glass)
    assert checked == ["break-glass"]
    row = lab.host()
    assert row is not None and row.observed_build == row.served_build == a.build_id

    # Promote the exact build and move the host to staging: the next boot runs the same build id.
    golden(lab.home, "promote", IMAGE, "--from", "dev", "--to", "staging")
    golden(lab.home, "publish", IMAGE, b.build_id, "--channel", "dev")  # dev moves on; staging must not
    lab.inventory_for(f"{IMAGE}@staging")
    drift_before = json.loads(golden(lab.home, "--json", "drift", "node1", "-i", str(lab.inventory)))
    t2 = lab.boot(a.build_id, "staging", reimage=False)
    after_reboot = lab.fleet()["node1"]
    assert after_reboot["state"] == "tainted", after_reboot  # a reboot of the same build is no reimage
    # and its report, unverified, is shown but changes no evidence (drift included)
    assert after_reboot["unverified"] == a.build_id, after_reboot
    assert json.loads(golden(lab.home, "--json", "drift", "node1", "-i", str(lab.inventory))) == drift_before

    # A new build reaches staging, then is rolled back: the machine boots the previous build again.
    golden(lab.home, "promote", IMAGE, "--from", "dev", "--to", "staging", "--force", "--reason",
           "e2e: relinked copy carries the same check results")
    t3 = lab.boot(b.build_id, "staging-new")
    assert (lab.fleet()["node1"]["state"], lab.fleet()["node1"]["taint"]) == ("in-sync", None)  # a new build: clean
    out = golden(lab.home, "rollback", IMAGE, "--channel", "staging")
    assert f"{b.build_id} -> {a.build_id}" in out
    t4 = lab.boot(a.build_id, "rolled-back")
    print(f"boot-to-report seconds: dev {t1:.0f}, staging {t2:.0f}, staging-new {t3:.0f}, rolled-back {t4:.0f}")


def _lab_inventory_with_image(lab_inventory: Path, out: Path, image: str) -> Path:
    """The lab's own inventory (its BMCs, MACs, uefi: true), every lab host assigned ``image``."""
    doc = yaml.safe_load(lab_inventory.read_text())
    doc["all"]["children"]["lab"]["vars"]["image"] = image
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def test_boot_through_rendered_dnsmasq_and_nginx(baked_base: Build, tmp_path: Path) -> None:
    """Issue 17 criterion 1: a UEFI lab machine behind a virtual IPMI BMC on loopback, its NIC a tap in the
    boot namespace's bridge, is reimaged by `golden reimage` (one-time UEFI PXE override + power on through
    the BMC) and boots through the rendered chain: OVMF's PXE -> proxyDHCP -> TFTP snponly.efi -> iPXE ->
    golden.ipxe -> /boot/<mac>.ipxe -> artifacts from nginx -> report."""
    home = tmp_path / "home"
    build = link_build(baked_base, Store(home / "store"))
    golden(home, "publish", "base", build.build_id, "--channel", "prod")
    runner = GoldenRunner(home=home)

    def lab_on_bridge(net: BootNet) -> Path:
        runner.json("lab", "up", "--nodes", "1", "--uefi", "--netns", net.boot_ns, "--bridge", net.bridge,
                    "--memory", "2048")
        return _lab_inventory_with_image(home / "lab" / "inventory.yaml", tmp_path / "inventory.yml", "base@prod")

    try:
        with boot_network(tmp_path, home, lab_on_bridge) as net:
            try:
                inv = tmp_path / "inventory.yml"
                [node] = runner.json("lab", "status")["nodes"]
                host, mac = node["name"], node["mac"]
                serial = home / "lab" / "nodes" / host / "serial.log"
                started = time.monotonic()
                out = runner.run("--json", "reimage", "lab", "--image", "base@prod", "-i", str(inv), "--canary", "0",
                                 "--wave-size", "1", "--retries", "0", "--boot-timeout", str(REPORT_TIMEOUT), "--yes",
                                 timeout=REPORT_TIMEOUT + 120, check=False)
                took = time.monotonic() - started
                tail = serial.read_text(errors="replace")[-3000:] if serial.exists() else "(no serial log)"
                assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{tail}"
                result = json.loads(out.stdout)
                assert result["status"] == "succeeded" and result["results"] == {host: "done"}, result
                # Genuine evidence: the report that counted carried the token of this run's attempt 1.
                steps = runner.json("runs", "show", result["run_id"])["steps"]
                [report] = [s for s in steps if s["step"] == "await-report" and s["phase"] == "done"]
                assert json.loads(report["detail"])["attempt"] == attempt_id(result["run_id"], host, 1), report
                assert [s["phase"] for s in steps if s["step"] == "bootdev-pxe"] == ["intent", "done"], steps
                # The BMC received the inventory's uefi: true as a one-time UEFI PXE override (IPMI EFI flag).
                [node] = runner.json("lab", "status")["nodes"]
                assert node["overrides"] == ["network once uefi"], node
                # golden serve commits the report before nginx relays its answer and logs it: wait for nginx's line.
                deadline = time.monotonic() + 30
                while "POST /report HTTP/1.1" not in net.access_log() and time.monotonic() < deadline:
                    time.sleep(0.5)
            finally:
                runner.run("lab", "down", check=False)

            def row() -> HostRow | None:
                with SQLiteStateDB(home / "state.db").read() as repo:
                    return repo.get_host(host)

            got = row()
            assert got is not None and got.observed_build == build.build_id and got.drift == (), got
            [fleet_row] = json.loads(golden(home, "--json", "fleet", "-i", str(inv)))
            assert fleet_row["state"] == "in-sync", fleet_row  # exactly: never drifted, never pending
            print(f"UEFI lab reimage through dnsmasq+nginx, reimage command to its end: {took:.0f} s")
            log = net.access_log()
            # The artifacts came from nginx (sendfile), the script and the report through it from golden serve.
            assert f"GET /store/base/{build.build_id}/rootfs.squashfs HTTP/1.1\" 200" in log, log
            assert "POST /report HTTP/1.1\" 200" in log, log
            # The firmware, not iPXE, did the first DHCP: a UEFI x86-64 PXE client (arch 7) without iPXE's
            # user class got snponly.efi over TFTP; then iPXE asked again and got the chain script.
            dhcp = net.proxy_log()
            mac_lines = [ln for ln in dhcp.splitlines() if mac in ln.lower() or "vendor class" in ln.lower()
                         or "user class" in ln.lower() or "sent" in ln.lower() or "tags" in ln.lower()]
            first_vendor = next(ln for ln in dhcp.splitlines() if "vendor class: PXEClient" in ln)
            assert "PXEClient:Arch:00007" in first_vendor, "\n".join(mac_lines)
            order = [ln for ln in dhcp.splitlines() if ("sent /" in ln and "tftp" in ln.lower())
                     or "user class: iPXE" in ln]
            assert order and "snponly.efi" in order[0], "\n".join(mac_lines)
            assert any("user class: iPXE" in ln for ln in order[1:]), "\n".join(mac_lines)
            assert "golden.ipxe" in dhcp
            assert net.serve is not None
            serve_err = net.serve.log.read_text(errors="replace")
            assert "Traceback" not in serve_err, serve_err  # issue 17 criterion 4
    finally:
        runner.run("lab", "down", check=False)  # also when the boot network itself failed to come up

