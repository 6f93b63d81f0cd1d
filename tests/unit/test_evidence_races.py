"""The boot hot path runs without the global write lock on PostgreSQL (``write_rows``): races that
the lock used to settle must still have exactly one winner, on both backends."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from toolkit.boot.evidence import ReportRejected, accept_report, issue_boot_token
from toolkit.boot.reports import RejectKind
from toolkit.fleet.fleet import Fleet
from toolkit.store.artifacts import Store

MAC = "52:54:00:00:0a:01"
SECRET = b"s" * 64


def _fleet(tmp_path: Path, db) -> Fleet:
    inv = tmp_path / "inventory.yml"
    inv.write_text(json.dumps({"all": {"hosts": {"n1": {"mac": MAC, "image": "web@prod"}}}}))
    fleet = Fleet(db, Store(tmp_path / "store"), inv)
    assert fleet.host_by_mac(MAC) is not None  # the inventory loaded before the race, as a server does at start
    return fleet


def _race(n: int, work) -> list[object]:
    start = threading.Barrier(n)
    out: list[object] = [None] * n

    def one(i: int) -> None:
        start.wait()
        try:
            out[i] = work(i)
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


@pytest.mark.parametrize("racers", [8])
def test_one_token_reported_at_once_by_many_is_accepted_once(tmp_path: Path, state_backend, racers: int) -> None:
    fleets = [_fleet(tmp_path, state_backend()) for _ in range(racers)]  # one connection pool per "replica"
    fleets[0].arm_attempts([("n1", "a77e000000000001", "b1")], expires_in=600)
    issued = issue_boot_token(fleets[0], SECRET, MAC, "n1", "b1", "10.0.0.5", "web")
    report = {"mac": MAC, "build_id": "b1", "image": "web", "token": issued.token, "hostname": "n1",
              "booted_at": "2026-12-02T00:00:00Z", "uptime_s": 5, "drift": [], "agent_version": "t"}
    # each racer's report differs (its uptime): one is recorded, every other one is a replay
    out = _race(racers, lambda i: accept_report(fleets[i], {**report, "uptime_s": i}, SECRET, "10.0.0.5"))
    accepted = [o for o in out if isinstance(o, tuple)]
    refused = [o for o in out if isinstance(o, ReportRejected)]
    assert len(accepted) == 1 and len(refused) == racers - 1, out
    assert {r.kind for r in refused} == {RejectKind.REPLAY}
    with fleets[0].db.read() as repo:
        events = repo.events_after(0, kinds=["report"])
    assert len(events) == 1


@pytest.mark.parametrize("racers", [8])
def test_one_report_resent_at_once_is_recorded_once_and_answered_alike(tmp_path: Path, state_backend,
                                                                      racers: int) -> None:
    """The same report sent many times at once (an agent whose answers were lost, through several
    replicas): recorded once; each sender gets that one answer, or a replay if it lost the spend race."""
    fleets = [_fleet(tmp_path, state_backend()) for _ in range(racers)]
    fleets[0].arm_attempts([("n1", "a77e000000000001", "b1")], expires_in=600)
    issued = issue_boot_token(fleets[0], SECRET, MAC, "n1", "b1", "10.0.0.5", "web")
    report = {"mac": MAC, "build_id": "b1", "image": "web", "token": issued.token, "hostname": "n1",
              "booted_at": "2026-12-02T00:00:00Z", "uptime_s": 5, "drift": [], "agent_version": "t"}
    out = _race(racers, lambda i: accept_report(fleets[i], report, SECRET, "10.0.0.5"))
    accepted = [o for o in out if isinstance(o, tuple)]
    refused = [o for o in out if isinstance(o, ReportRejected)]
    assert len(accepted) + len(refused) == racers and accepted, out
    assert len({token for _, token in accepted}) == 1  # one next token, however often it was asked for
    assert {r.kind for r in refused} <= {RejectKind.REPLAY}
    with fleets[0].db.read() as repo:
        assert len(repo.events_after(0, kinds=["report"])) == 1
    assert accept_report(fleets[0], report, SECRET, "10.0.0.5")[1] == accepted[0][1]  # and again afterwards


def test_two_addresses_fetching_one_attempt_at_once_contest_it(tmp_path: Path, state_backend) -> None:
    fleets = [_fleet(tmp_path, state_backend()) for _ in range(2)]
    fleets[0].arm_attempts([("n1", "a77e000000000001", "b1")], expires_in=600)
    out = _race(2, lambda i: issue_boot_token(fleets[i], SECRET, MAC, "n1", "b1", f"10.0.0.{i + 1}"))
    assert all(not isinstance(o, Exception) for o in out), [str(o) for o in out]
    assert all(o.recorded and o.attempt == "a77e000000000001" for o in out), out
    assert sorted(o.contested for o in out) == [False, True]  # the second fetch, whichever it was
    with fleets[0].db.read() as repo:
        armed = repo.get_attempt("n1")
    assert armed is not None and armed.contested_at is not None and armed.fetches == 2


@pytest.mark.integration
def test_a_report_that_loses_the_spend_records_nothing(tmp_path: Path, pg_url: str) -> None:
    """The interleaving forced: A reads the token unspent, B accepts the same report, then A spends."""
    from toolkit.boot.evidence import _record_report
    from toolkit.boot.reports import parse_report
    from toolkit.state.postgres import PostgresStateDB

    a, b = _fleet(tmp_path, PostgresStateDB(pg_url)), _fleet(tmp_path, PostgresStateDB(pg_url))
    a.arm_attempts([("n1", "a77e000000000001", "b1")], expires_in=600)
    issued = issue_boot_token(a, SECRET, MAC, "n1", "b1", "10.0.0.5", "web")
    payload = {"mac": MAC, "build_id": "b1", "image": "web", "token": issued.token, "hostname": "n1",
               "booted_at": "2026-12-02T00:00:00Z", "uptime_s": 5, "drift": [], "agent_version": "t"}
    report, _, _ = parse_report(payload)
    nonce = issued.token.split(".")[0]
    with a.db.write_rows() as repo:
        row = repo.get_token(nonce)
        assert row is not None and row.used_at is None
        accept_report(b, payload, SECRET, "10.0.0.5")  # B wins meanwhile, in its own transaction
        assert _record_report(repo, "n1", MAC, report, row, 1.0) is False
    with a.db.read() as repo:
        assert len(repo.events_after(0, kinds=["report"])) == 1


def test_an_accepted_report_is_one_transaction_of_few_statements(tmp_path: Path) -> None:
    """Each statement is a round trip to PostgreSQL: a report (spend, record, status, next token)
    is one transaction of 18 statements with BEGIN and COMMIT (it was 3 transactions and 20 statements;
    14 before a verified report read its attempt, recorded which attempt vouched for the build, and the
    status it answers with read the host's unverified observation; 18 since that status also reads the
    host's unaccepted hardware change). A report carrying hardware facts adds two: read the latest, then
    touch it or add a row."""
    from toolkit.state.db import SQLiteStateDB

    db = SQLiteStateDB(tmp_path / "state.db")
    db.migrate()
    fleet = _fleet(tmp_path, db)
    fleet.arm_attempts([("n1", "a77e000000000001", "b1")], expires_in=600)
    issued = issue_boot_token(fleet, SECRET, MAC, "n1", "b1", "10.0.0.5", "web")
    report = {"mac": MAC, "build_id": "b1", "image": "web", "token": issued.token, "hostname": "n1",
              "booted_at": "2026-12-02T00:00:00Z", "uptime_s": 5, "drift": [], "agent_version": "t"}
    statements: list[str] = []
    db._conn().set_trace_callback(statements.append)
    status, token = accept_report(fleet, report, SECRET, "10.0.0.5")
    db._conn().set_trace_callback(None)
    assert token and status.name == "n1"
    sql = [s.split()[0].upper() for s in statements]
    assert sql.count("BEGIN") == 1 and sql.count("COMMIT") == 1, statements
    # 17: the status the agent gets back reads the host's cleaning mark (a retired host never looks in-sync)
    assert len(statements) <= 17 + 2, "\n".join(statements)
