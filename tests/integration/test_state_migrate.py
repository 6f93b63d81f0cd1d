"""golden state migrate: a populated SQLite home copied into an empty PostgreSQL reads the same through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build, write_inventory
from toolkit.boot.token import shared_secret
from toolkit.cli import main
from toolkit.fleet.fleet import Fleet
from toolkit.rollout.journal import Journal, Phase, RunStatus, Step
from toolkit.rollout.leases import take_leases
from toolkit.state.db import LoginRow, SQLiteStateDB, TokenRow
from toolkit.state.postgres import PostgresStateDB
from toolkit.state.schema import TABLES
from toolkit.state.slots import SlotRow
from toolkit.store.artifacts import Store

pytestmark = pytest.mark.integration


def golden_json(capsys, home: Path, *args: str) -> object:
    capsys.readouterr()
    assert main(["--home", str(home), "--json", *args]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def populate(home: Path, inv: Path, capsys) -> None:
    """State written through the normal paths: channel verbs, the fleet, the journal, the boot evidence."""
    for args in (("publish", "web", "b1", "--channel", "dev"), ("promote", "web", "--from", "dev", "--to", "prod"),
                 ("publish", "web", "b2", "--channel", "dev")):
        assert main(["--home", str(home), *args]) == 0
    db = SQLiteStateDB(home / "state.db")
    fleet = Fleet(db, Store(home / "store"), inv)
    fleet.set_desired("n0", "web", "b2")
    fleet.arm_attempts([("n1", "att-1", "b1")], expires_in=600)
    journal = Journal(db)
    journal.create_run("r-1", "alice", "all", "web", "b2", {"waves": [["n0"]]})
    journal.record("r-1", "n0", 0, 1, Step.POWER, Phase.DONE, "cycled")
    journal.set_status("r-1", RunStatus.SUCCEEDED, "1 done")
    take_leases(db, ["n2"], "r-2", "ctl-1:1:x")
    shared_secret(db, home)  # what golden serve creates on its first start
    with db.write() as repo:
        repo.record_unknown("52:54:00:99:99:99", 1.0, "127.0.0.1")
        repo.add_event("served", 2.0, "52:54:00:00:01:00", "n0", "b2", "web@dev")
        repo.insert_token(TokenRow("nonce-1", "52:54:00:00:01:00", "n0", "b2", "att-1", 3.0, "127.0.0.1", None))
        repo.use_nonce("nonce-0", "52:54:00:00:01:00", 4.0)
        repo.add_audit(5.0, "bob", "break-glass", "n0", "INC-1", "ssh")
        repo.record_gate("base", "b2", "lab-boot", True, 6.0, "run r1")
        repo.record_drift("n0", "b2", {"/etc/motd": "modified"}, 7.0)
        grant = repo.add_grant("n0", "52:54:00:00:01:00", "golden-breakglass@52:54:00:00:01:00", "bob", "INC-1",
                               8.0, 3608.0, "SHA256:x", "golden-breakglass:n0:bob")
        repo.record_login(LoginRow("n0", "2026-01-01T00:00:09+00:00", "Accepted publickey for root", "root",
                                   "10.0.2.2", "certificate", grant, "k", grant, "b2", 9.0))
        repo.taint_host("n0", 8.0, "b2", "break-glass", "break-glass grant 1 to bob: INC-1")
        repo.record_verified("n0", "att-0", "b2", 10.0)
        repo.record_unverified("n1", "web", "b1", 11.0, "10.0.0.9")
        repo.count_noise("reject:forged", "10.0.0.66", 12.0, "52:54:00:99:99:98: forged")
        repo.hold_rotation("n2", ["web"], "r-2", 13.0)  # a host a reimage holds out of rotation
        repo.add_hardware("n0", "d1", {"memory_mib": 1536}, 14.0, "b2", [])  # the machine as first seen
        repo.add_hardware("n0", "d2", {"memory_mib": 1024}, 15.0, "b2", ["memory 1536 MiB -> 1024 MiB"])
        repo.mark_hw_changed("n0", 15.0, ["memory 1536 MiB -> 1024 MiB"])
        repo.set_cleaning("n2", "clean-failed", 16.0, "att-2", "vdb (virtio): FAILED: the disk is read-only")
        repo.set_slots(SlotRow("n1", "b", "b1", "b2", None, "b1", 17.0))  # a disk host back on b after a fall-back
    db.close()
    capsys.readouterr()


def views(capsys, home: Path) -> dict[str, object]:
    return {"history": golden_json(capsys, home, "images", "--history", "web"),
            "fleet": golden_json(capsys, home, "fleet"),
            "hw": golden_json(capsys, home, "hw", "--history"),
            "runs": golden_json(capsys, home, "runs"),
            "run": golden_json(capsys, home, "runs", "show", "r-1")}


def test_migrate_copies_everything_and_reads_the_same(tmp_path, capsys, monkeypatch, pg_url):
    home = tmp_path / "home"
    store = Store(home / "store")
    make_build(store, "web", "b1", age_rank=1)
    make_build(store, "web", "b2", age_rank=2)
    inv = write_inventory(tmp_path / "inv.yml", {f"n{i}": (f"52:54:00:00:01:0{i}", "web@prod") for i in range(3)})
    monkeypatch.setenv("GOLDEN_INVENTORY", str(inv))
    monkeypatch.delenv("GOLDEN_STATE_URL", raising=False)
    populate(home, inv, capsys)
    before = views(capsys, home)

    out = golden_json(capsys, home, "state", "migrate", "--to", pg_url)
    assert out["rows"]["channel_history"] == 3 and all(out["rows"][t] >= 1 for t in TABLES), out

    sqlite, pg = SQLiteStateDB(home / "state.db"), PostgresStateDB(pg_url)
    with sqlite.read() as a, pg.read() as b:
        for table in TABLES:
            assert a.dump_table(table) == b.dump_table(table), table

    monkeypatch.setenv("GOLDEN_STATE_URL", pg_url)
    assert views(capsys, home) == before
    # New rows after the copy get fresh ids (the identity counters moved past the copied ones).
    assert main(["--home", str(home), "promote", "web", "--from", "dev", "--to", "prod"]) == 0
    hist = golden_json(capsys, home, "images", "--history", "web")
    assert [h["id"] for h in hist] == [1, 2, 3, 4]

    # A second migrate into the same (now populated) database is refused: bad input, one line.
    capsys.readouterr()
    assert main(["--home", str(home), "state", "migrate", "--to", pg_url]) == 2
    err = capsys.readouterr().err
    assert "already holds golden state" in err and "Traceback" not in err
    pg.close()
    sqlite.close()


def test_migrate_refuses_a_password_on_the_command_line(tmp_path, capsys):
    (tmp_path / "home").mkdir()
    assert main(["--home", str(tmp_path / "home"), "state", "migrate", "--to", "postgresql://u:hunter2@db/x"]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "~/.pgpass" in err
