"""Drift you can read, logins that taint, taints a reimage clears, staleness: on the server side, both backends.

Reports go through ``accept_report`` exactly as ``POST /report`` hands them over, with tokens the
boot server issued; the logins are forged journal lines as sshd and login write them.
"""

from __future__ import annotations

import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build, write_inventory
from toolkit.boot.evidence import accept_report, issue_boot_token
from toolkit.core.config import StaleConfig
from toolkit.fleet.fleet import Fleet
from toolkit.fleet.logins import parse_login
from toolkit.state.db import StateDB
from toolkit.store import channels
from toolkit.store.artifacts import Store

SECRET = b"k" * 64
MAC = "52:54:00:15:00:01"
ADDR = "10.0.0.21"
NOW_ISO = datetime.now(UTC).replace(microsecond=0).isoformat()
STANDING_KEY = "Accepted publickey for root from 10.9.9.9 port 40022 ssh2: ED25519 SHA256:Zm9vYmFy"


def cert_line(serial: int) -> str:
    return (f"Accepted publickey for root from 10.0.2.2 port 51234 ssh2: ED25519-CERT SHA256:abc ID "
            f"golden-breakglass:node1:alice (serial {serial}) CA ED25519 SHA256:def")


@pytest.fixture
def fleet(tmp_path: Path, state_db: StateDB) -> Fleet:
    store = Store(tmp_path / "home" / "store")
    make_build(store, "base", "b1", age_rank=1)
    make_build(store, "base", "b2", age_rank=2)
    channels.publish(state_db, store, "base", "b1", "prod", user="test")
    inv = write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, "base@prod")})
    return Fleet(state_db, store, inv)


ATTEMPTS = itertools.count(1)


def report(fleet: Fleet, build: str = "b1", *, drift: dict[str, str] | None = None,
           logins: list[tuple[str, str]] | None = None, token: str | None = None, booted_at: str | None = None,
           verified: bool = True):
    """A report as an agent sends it; with no token given, of a fresh boot (within a reimage attempt if verified)."""
    if token is None and verified:
        fleet.arm_attempts([("node1", f"{next(ATTEMPTS):016x}", build)], expires_in=600)
    token = token or issue_boot_token(fleet, SECRET, MAC, "node1", build, ADDR, "base").token
    drift = drift or {}
    payload = {"mac": MAC, "build_id": build, "image": "base", "token": token, "hostname": "node1",
               "booted_at": booted_at or NOW_ISO, "uptime_s": 12.0, "drift": sorted(drift),
               "drift_kinds": drift, "agent_version": "1.1.0",
               "logins": [{"at": at, "line": line} for at, line in (logins or [])]}
    return accept_report(fleet, payload, SECRET, ADDR)


def state_of(fleet: Fleet) -> str:
    return fleet.status()[0].state


def test_drift_paths_keep_kind_and_first_seen_and_leave_when_gone(fleet: Fleet) -> None:
    _, next_token = report(fleet, drift={"/etc/ssh/sshd_config": "modified", "/etc/issue.net": "deleted"})
    first = {r.path: r for r in fleet.drift("node1")}
    assert {p: r.kind for p, r in first.items()} == {"/etc/issue.net": "deleted", "/etc/ssh/sshd_config": "modified"}
    assert state_of(fleet) == "drifted"
    time.sleep(0.01)
    report(fleet, drift={"/etc/ssh/sshd_config": "modified", "/usr/local/bin/implant": "added"}, token=next_token)
    second = {r.path: r for r in fleet.drift()}
    assert sorted(second) == ["/etc/ssh/sshd_config", "/usr/local/bin/implant"]  # the restored file left
    kept = second["/etc/ssh/sshd_config"]
    assert kept.first_seen == first["/etc/ssh/sshd_config"].first_seen < kept.last_seen
    assert second["/usr/local/bin/implant"].kind == "added"


def test_a_login_with_a_standing_key_taints_the_host(fleet: Fleet) -> None:
    """Criterion 5, second half: a forged journal line with no break-glass certificate taints."""
    report(fleet, logins=[(NOW_ISO, STANDING_KEY)])
    status = fleet.status()[0]
    assert status.state == "tainted"
    assert status.taint == f"login without a break-glass certificate: root logged in from 10.9.9.9 at {NOW_ISO} " \
                           "with a standing SSH key"
    (login,) = fleet.logins()
    assert (login.user, login.from_addr, login.method, login.grant_id) == ("root", "10.9.9.9", "publickey", None)
    with fleet.db.read() as repo:
        audit = repo.list_audit("node1")
        events = repo.events_after(0, ["unauthorized-login"])
    assert [a.action for a in audit] == ["taint"] and len(events) == 1


@pytest.mark.parametrize("serial_of", [lambda g: g + 100, lambda g: g], ids=["unknown-serial", "granted"])
def test_a_certificate_login_taints_unless_its_serial_is_a_grant_for_this_host(fleet: Fleet, serial_of) -> None:
    now = time.time()
    with fleet.db.write() as repo:
        grant = repo.add_grant("node1", MAC, f"golden-breakglass@{MAC}", "alice", "disk full", now, now + 3600,
                               "SHA256:abc", "golden-breakglass:node1:alice")
    serial = serial_of(grant)
    report(fleet, logins=[(NOW_ISO, cert_line(serial))])
    (login,) = fleet.logins()
    assert (login.method, login.serial) == ("certificate", serial)
    if serial == grant:
        # authorized, so no unauthorized-login event; but the boot was touched by hand: tainted all the
        # same (a grant can outlive the reimage that cleared the taint its issue set)
        assert login.grant_id == grant and state_of(fleet) == "tainted"
        assert fleet.status()[0].taint == f"break-glass login by root with grant {grant}"
        with fleet.db.read() as repo:
            assert repo.events_after(0, ["unauthorized-login"]) == []
    else:
        assert login.grant_id is None and state_of(fleet) == "tainted"
        assert f"serial {serial} that is no break-glass grant" in (fleet.status()[0].taint or "")


def test_a_login_after_its_grant_expired_taints(fleet: Fleet) -> None:
    now = time.time()
    with fleet.db.write() as repo:
        grant = repo.add_grant("node1", MAC, f"golden-breakglass@{MAC}", "alice", "r", now - 7200, now - 3600, "f", "k")
    report(fleet, logins=[(NOW_ISO, cert_line(grant))])
    assert state_of(fleet) == "tainted"


def test_a_login_reported_again_is_recorded_once(fleet: Fleet) -> None:
    _, token = report(fleet, logins=[(NOW_ISO, STANDING_KEY)])
    report(fleet, logins=[(NOW_ISO, STANDING_KEY)], token=token)
    assert len(fleet.logins()) == 1
    with fleet.db.read() as repo:
        assert len(repo.list_audit("node1")) == 1


def test_only_a_reimage_clears_a_taint(fleet: Fleet) -> None:
    _, token = report(fleet, logins=[(NOW_ISO, STANDING_KEY)])
    later = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0).isoformat()
    report(fleet, token=token, booted_at=later)  # a periodic re-report: still tainted
    assert state_of(fleet) == "tainted"
    fleet.disarm_attempts([("node1", fleet.attempt_of("node1").attempt)])  # that reimage is over
    report(fleet, booted_at=later, verified=False)  # a reboot of the same build outside a reimage: still tainted
    assert state_of(fleet) == "tainted"
    report(fleet, booted_at=later)  # the reimage's boot: clean again
    status = fleet.status()[0]
    assert (status.state, status.taint) == ("in-sync", None)
    with fleet.db.read() as repo:
        assert [a.action for a in repo.list_audit("node1")] == ["untaint", "taint"]


def test_a_reimage_clears_only_the_taint_it_read(fleet: Fleet) -> None:
    """The report path runs without the global write lock on PostgreSQL: a taint that replaced the one
    it read (a new break-glass grant meanwhile) must survive its conditional clear."""
    with fleet.db.write() as repo:
        repo.taint_host("node1", 100.0, "b1", "breakglass", "grant 1")
        old = repo.get_taint("node1")
        repo.clear_taint("node1")
        repo.taint_host("node1", 200.0, "b1", "breakglass", "grant 2")
        assert old is not None and repo.clear_taint("node1", old.at) is False
        assert repo.get_taint("node1").reason == "grant 2"
        assert repo.clear_taint("node1", 200.0) is True


LOGIN_LINES = [
    (STANDING_KEY, ("root", "10.9.9.9", "publickey", None, "")),
    (cert_line(42), ("root", "10.0.2.2", "certificate", 42, "golden-breakglass:node1:alice")),
    ("Accepted password for alice from 192.0.2.7 port 5022 ssh2", ("alice", "192.0.2.7", "password", None, "")),
    ("Accepted keyboard-interactive/pam for bob from 192.0.2.8 port 1 ssh2",
     ("bob", "192.0.2.8", "keyboard-interactive/pam", None, "")),
    ("ROOT LOGIN  on '/dev/ttyS0'", ("root", "/dev/ttyS0", "console", None, "")),
    ("LOGIN ON tty1 BY carol", ("carol", "tty1", "console", None, "")),
    # a certificate-looking ID inside a plain key's comment is no certificate
    ("Accepted publickey for root from 10.1.1.1 port 2 ssh2: ED25519 SHA256:x ID y (serial 9) CA ED25519 SHA256:z",
     ("root", "10.1.1.1", "publickey", None, "")),
    ("something else entirely", ("?", "?", "unknown", None, "")),
]


@pytest.mark.parametrize(("line", "expected"), LOGIN_LINES, ids=[x[0][:40] for x in LOGIN_LINES])
def test_login_lines_parse(line: str, expected: tuple) -> None:
    got = parse_login(NOW_ISO, line)
    assert (got.user, got.from_addr, got.method, got.serial, got.key_id) == expected


def test_fleet_stale_names_the_package_and_both_versions(tmp_path: Path, state_db: StateDB) -> None:
    """Criterion 3 at unit level: two recorded manifests, the newer with a security upgrade."""
    store = Store(tmp_path / "home" / "store")
    old_packages = {"openssl": "3.0.11-1~deb12u2", "bash": "5.2.15-2+b2"}
    make_build(store, "base", "b1", age_rank=1, packages=old_packages,
               package_archives={"openssl": "bookworm", "bash": "bookworm"},
               created_at=(datetime.now(UTC) - timedelta(days=20)).isoformat())
    make_build(store, "base", "b2", age_rank=2, packages={**old_packages, "openssl": "3.0.15-1~deb12u1"},
               package_archives={"openssl": "bookworm-security", "bash": "bookworm"})
    channels.publish(state_db, store, "base", "b1", "prod", user="test")
    inv = write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, "base@prod"), "node2": ("52:54:00:15:00:02",
                                                                                             "base@prod")})
    fleet = Fleet(state_db, store, inv)
    report(fleet, "b1")
    channels.publish(state_db, store, "base", "b2", "prod", user="test")
    policy = StaleConfig(max_age="14d", max_security_behind=0, max_behind=0)
    (s1, s2) = fleet.staleness("all", policy)
    assert (s1.host, s1.running, s1.current, s1.builds_behind) == ("node1", "b1", "b2", 1)
    assert [(c.package, c.old, c.new) for c in s1.security_behind] == [("openssl", "3.0.11-1~deb12u2",
                                                                         "3.0.15-1~deb12u1")]
    assert any("openssl 3.0.11-1~deb12u2 -> 3.0.15-1~deb12u1" in r for r in s1.reasons), s1.reasons
    assert any("days old (max 14d)" in r for r in s1.reasons) and any("1 build(s) behind" in r for r in s1.reasons)
    assert not s2.stale  # never reported: nothing runs there to be stale
    assert [h.state for h in fleet.status(policy=policy)] == ["stale", "never-reported"]


def test_cli_drift_and_fleet_stale(tmp_path: Path, monkeypatch, capsys) -> None:
    """``golden drift`` and ``golden fleet --stale`` as a script reads them (--json) and as a person does."""
    import json

    from toolkit.cli import main
    from toolkit.state.db import SQLiteStateDB

    home = tmp_path / "home"
    store = Store(home / "store")
    make_build(store, "base", "b1", age_rank=1, packages={"openssl": "3.0.11-1~deb12u2"},
               package_archives={"openssl": "bookworm"})
    make_build(store, "base", "b2", age_rank=2, packages={"openssl": "3.0.15-1~deb12u1"},
               package_archives={"openssl": "bookworm-security"})
    db = SQLiteStateDB(home / "state.db")
    channels.publish(db, store, "base", "b1", "prod", user="test")
    inv = write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, "base@prod")})
    fleet = Fleet(db, store, inv)
    report(fleet, "b1", drift={"/etc/motd": "modified"})
    channels.publish(db, store, "base", "b2", "prod", user="test")
    project = tmp_path / "project"
    (project / "images").mkdir(parents=True)
    (project / "roles").mkdir()
    (project / "golden.yaml").write_text("stale: {max_security_behind: 0}\n")
    monkeypatch.setenv("GOLDEN_PROJECT", str(project))
    monkeypatch.setenv("GOLDEN_INVENTORY", str(inv))
    base = ["--home", str(home)]
    capsys.readouterr()
    assert main([*base, "--json", "drift", "node*"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["host"], row["path"], row["kind"], row["build_id"]) == ("node1", "/etc/motd", "modified", "b1")
    assert main([*base, "drift"]) == 0
    assert re.search(r"node1\s+modified\s+/etc/motd\s+b1", capsys.readouterr().out)
    assert main([*base, "--json", "fleet", "--stale"]) == 0
    (stale,) = json.loads(capsys.readouterr().out)
    assert stale["host"] == "node1" and stale["reasons"] == [
        "lacks 1 security update(s) of base@prod build b2 (max 0): openssl 3.0.11-1~deb12u2 -> 3.0.15-1~deb12u1"]
    assert main([*base, "fleet", "--stale"]) == 0
    assert "openssl 3.0.11-1~deb12u2 -> 3.0.15-1~deb12u1" in capsys.readouterr().out
