"""Channels: publish/promote/rollback, the audit history, racing commands, and gc planning."""

from __future__ import annotations

import itertools
import multiprocessing
import re
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build
from toolkit.core.errors import GateError
from toolkit.state.db import HistoryRow, SQLiteStateDB, StateDB
from toolkit.store import channels
from toolkit.store.artifacts import Store
from toolkit.store.channels import ChannelError, rollback_stack
from toolkit.store.gc import GcItem, gc, plan_gc


@pytest.fixture
def db(state_db: StateDB) -> StateDB:
    return state_db  # SQLite and PostgreSQL (tests/fixtures/postgres.py)


def test_publish_records_history(db, fake_store):
    make_build(fake_store, "base", "b1", age_rank=1)
    make_build(fake_store, "base", "b2", age_rank=2)
    r1 = channels.publish(db, fake_store, "base", "b1", "dev", user="alice", reason="first")
    r2 = channels.publish(db, fake_store, "base", "latest-bake", "dev", user="bob")
    assert r1.applied and r2.applied
    assert channels.channel_build(db, "base", "dev") == "b2"
    hist = channels.history(db, "base", "dev")
    assert [(h.action, h.from_build, h.to_build, h.user, h.reason) for h in hist] == [
        ("publish", None, "b1", "alice", "first"), ("publish", "b1", "b2", "bob", "")]
    assert hist[0].at <= hist[1].at
    # Publishing what the channel already points at changes and records nothing.
    again = channels.publish(db, fake_store, "base", "b2", "dev", user="bob")
    assert not again.applied
    assert len(channels.history(db, "base", "dev")) == 2


def test_publish_unknown_build_refused(db, fake_store):
    make_build(fake_store, "base", "b1")
    with pytest.raises(ChannelError, match="no build base/nope"):
        channels.publish(db, fake_store, "base", "nope", "dev")
    with pytest.raises(ChannelError, match="no builds"):
        channels.publish(db, fake_store, "web", "latest-bake", "dev")
    with pytest.raises(ChannelError, match="not a build id"):
        channels.publish(db, fake_store, "base", "../b1", "dev")
    with pytest.raises(ChannelError, match="not a valid name"):
        channels.publish(db, fake_store, "base", "b1", "Dev Channel")
    assert channels.history(db) == []


def test_promote_exact_build(db, fake_store):
    make_build(fake_store, "base", "b1", age_rank=1)
    make_build(fake_store, "base", "b2", age_rank=2)
    channels.publish(db, fake_store, "base", "b1", "dev")
    channels.promote(db, fake_store, "base", "dev", "staging", user="carol")
    channels.publish(db, fake_store, "base", "b2", "dev")
    # staging keeps the build it was promoted, not "whatever dev is now"
    assert channels.channel_build(db, "base", "staging") == "b1"
    last = channels.history(db, "base", "staging")[-1]
    assert (last.action, last.from_build, last.to_build, last.user, last.forced) == ("promote", None, "b1", "carol",
                                                                                      False)


@pytest.mark.parametrize("checks_passed", [False, None])
def test_promote_unchecked_build_refused_unless_forced_with_reason(db, fake_store, checks_passed):
    make_build(fake_store, "base", "bad", checks_passed=checks_passed)
    channels.publish(db, fake_store, "base", "bad", "dev")
    with pytest.raises(GateError, match=r"refused by the checks gate: .* has not passed its checks"):
        channels.promote(db, fake_store, "base", "dev", "staging")
    with pytest.raises(ChannelError, match="--reason"):
        channels.promote(db, fake_store, "base", "dev", "staging", force=True)
    assert channels.channel_build(db, "base", "staging") is None
    res = channels.promote(db, fake_store, "base", "dev", "staging", force=True, reason="hotfix for INC-42", user="dan")
    assert res.applied and res.change.forced
    last = channels.history(db, "base", "staging")[-1]
    assert (last.forced, last.reason, last.user) == (True, "hotfix for INC-42", "dan")


def test_promote_from_empty_channel(db, fake_store):
    with pytest.raises(ChannelError, match="points at no build"):
        channels.promote(db, fake_store, "base", "dev", "staging")


def test_rollback_walks_back(db, fake_store):
    for n in (1, 2, 3):
        make_build(fake_store, "base", f"b{n}", age_rank=n)
        channels.publish(db, fake_store, "base", f"b{n}", "prod")
    assert channels.rollback(db, fake_store, "base", "prod").change.to_build == "b2"
    assert channels.rollback(db, fake_store, "base", "prod").change.to_build == "b1"
    with pytest.raises(ChannelError, match="no previous build"):
        channels.rollback(db, fake_store, "base", "prod")
    assert channels.channel_build(db, "base", "prod") == "b1"
    hist = channels.history(db, "base", "prod")
    assert [(h.action, h.from_build, h.to_build) for h in hist][-2:] == [("rollback", "b3", "b2"),
                                                                         ("rollback", "b2", "b1")]


def test_rollback_of_empty_channel(db, fake_store):
    with pytest.raises(ChannelError, match="nothing to roll back"):
        channels.rollback(db, fake_store, "base", "prod")


def _row(action, frm, to):
    return HistoryRow(0, "base", "prod", action, frm, to, "u", 0.0, "", False)


def test_rollback_stack_pure():
    rows = [_row("publish", None, "a"), _row("publish", "a", "b"), _row("rollback", "b", "a"),
            _row("promote", "a", "c")]
    assert rollback_stack(rows) == ["a", "c"]
    assert channels.rollback_target(rows) == "a"
    assert channels.rollback_target(rows[:1]) is None


# ---- racing commands ----

def _hammer(open_db, store_root: str, worker: int, rounds: int, start=None) -> None:
    db = open_db()
    store = Store(Path(store_root))
    if start is not None:
        start.wait(30)  # everyone starts hammering at the same moment
    for i in range(rounds):
        build = ("b1", "b2", "b3")[(i + worker) % 3]
        channels.publish(db, store, "base", build, "dev", user=f"w{worker}")
        channels.promote(db, store, "base", "dev", "staging", user=f"w{worker}")
        if i % 5 == 4:
            try:
                channels.rollback(db, store, "base", "staging", user=f"w{worker}")
            except ChannelError:
                pass


def _assert_consistent(db: StateDB, channel: str) -> int:
    hist = channels.history(db, "base", channel)
    assert hist, channel
    assert hist[0].from_build is None
    for prev, cur in itertools.pairwise(hist):
        assert cur.from_build == prev.to_build, (prev, cur)
        assert cur.from_build != cur.to_build
    assert channels.channel_build(db, "base", channel) == hist[-1].to_build
    return len(hist)


def test_racing_processes_leave_consistent_history(db, state_backend, fake_store):
    for n in (1, 2, 3):
        make_build(fake_store, "base", f"b{n}", age_rank=n)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_hammer, args=(state_backend, str(fake_store.root), w, 150, start))
             for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert _assert_consistent(db, "dev") > 10
    assert _assert_consistent(db, "staging") > 10
    users = {h.user for h in channels.history(db, "base")}
    assert users == {"w0", "w1", "w2"}


def test_racing_threads_leave_consistent_history(db, state_backend, fake_store):
    import threading

    for n in (1, 2, 3):
        make_build(fake_store, "base", f"b{n}", age_rank=n)
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            _hammer(state_backend, str(fake_store.root), w, 25)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _assert_consistent(db, "dev")
    _assert_consistent(db, "staging")


# ---- retention ----

def test_plan_gc_keeps_newest_and_referenced():
    builds = {"base": [("b5", 5), ("b4", 4), ("b3", 3), ("b2", 2), ("b1", 1)], "web": [("w1", 10)]}
    refs = {("base", "b1"): ["channel prod"], ("base", "b3"): ["running on node1"]}
    plan = plan_gc(builds, refs, keep=2)
    assert plan.delete == (GcItem("base", "b2"),)
    assert plan.freed_bytes == 2
    kept = {(k.image, k.build_id): k.reasons for k in plan.keep}
    assert kept[("base", "b1")] == ("channel prod",)
    assert kept[("base", "b5")] == ("among the 2 newest",)
    assert kept[("base", "b3")] == ("running on node1",)
    assert ("web", "w1") in kept
    assert plan_gc(builds, {}, keep=0).freed_bytes == 25
    assert len(plan_gc(builds, refs, keep=0).delete) == 4
    with pytest.raises(ChannelError):
        plan_gc(builds, {}, keep=-1)


def test_gc_never_deletes_referenced_builds(db, fake_store):
    for n in range(1, 7):
        make_build(fake_store, "base", f"b{n}", age_rank=n)
    channels.publish(db, fake_store, "base", "b1", "prod")
    channels.publish(db, fake_store, "base", "b2", "prod")  # b1 becomes prod's rollback target
    channels.publish(db, fake_store, "base", "b3", "dev")
    with db.write() as repo:
        repo.ensure_host("node1", "52:54:00:00:00:01")
        repo.set_desired("node1", "base", "b4", 0.0)
    dry = gc(db, fake_store, keep=1, dry_run=True)
    assert [i.build_id for i in dry.delete] == ["b5"]
    assert {b.build_id for b in fake_store.builds("base")} == {f"b{n}" for n in range(1, 7)}
    done = gc(db, fake_store, keep=1)
    assert done.deleted == ("base/b5",)
    assert {b.build_id for b in fake_store.builds("base")} == {"b1", "b2", "b3", "b4", "b6"}
    assert not any(p.name.startswith("base.gc-") for p in (fake_store.root / ".staging").iterdir())


def test_migrations_idempotent(tmp_path):
    a = SQLiteStateDB(tmp_path / "s.db")
    b = SQLiteStateDB(tmp_path / "s.db")
    assert b.migrate(()) == []
    from toolkit.state.db import Migration
    assert a.migrate([Migration("9999_extra", "CREATE TABLE extra (x INTEGER)")]) == ["9999_extra"]
    assert b.migrate([Migration("9999_extra", "CREATE TABLE extra (x INTEGER)")]) == []
    import sqlite3

    assert sqlite3.connect(tmp_path / "s.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("script, expected", [
    ("CREATE TABLE a (x TEXT DEFAULT ';');\nCREATE TABLE b (y INTEGER);", 2),
    ("CREATE TABLE a (x INTEGER)", 1),
    ("CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE a SET x = 1;\n  UPDATE a SET x = 2;\nEND;", 1),
    ("\n  \n", 0),
])
def test_migrations_split_on_complete_statements(script: str, expected: int) -> None:
    from toolkit.state.schema import split_statements

    assert len(split_statements(script)) == expected


def test_publish_gate_applies_only_to_channels_hosts_follow(db, fake_store):
    make_build(fake_store, "base", "bad", checks_passed=False)
    assert channels.publish(db, fake_store, "base", "bad", "scratch").applied  # nobody follows it
    with pytest.raises(GateError, match="publishing it to prod, which 2 host\\(s\\) follow \\(n1, n2\\)"):
        channels.publish(db, fake_store, "base", "bad", "prod", followers=["n1", "n2"])
    with pytest.raises(ChannelError, match="--reason"):
        channels.publish(db, fake_store, "base", "bad", "prod", followers=["n1"], force=True)
    assert channels.channel_build(db, "base", "prod") is None
    res = channels.publish(db, fake_store, "base", "bad", "prod", followers=["n1"], force=True, reason="INC-7")
    assert res.applied and res.change.forced
    assert channels.history(db, "base", "prod")[-1].forced


@pytest.mark.parametrize("data, error", [
    ({"prod": {"lab_boot": "maybe"}}, ".promotion.prod.lab_boot"),
    ({"prod": {"soak": "a while"}}, "soak must be a duration"),
    ({"prod": {"in_sync": -1}}, ".promotion.prod.in_sync"),
    ({"prod": {"bogus": 1}}, ".promotion.prod.bogus"),
    (["prod"], "expected a mapping"),
])
def test_promotion_policy_bad_input(data, error):
    from toolkit.core.errors import InputError
    from toolkit.store.policy import parse_policy

    with pytest.raises(InputError, match=re.escape(error)):
        parse_policy(data)


def test_promotion_gates_refuse_until_evidence(db, fake_store):
    import time as _time

    from toolkit.core.mac import normalize_mac
    from toolkit.state.db import ObservedReport
    from toolkit.store.policy import LAB_BOOT, parse_policy

    policy = parse_policy({"prod": {"lab_boot": True, "in_sync": 2, "soak": "1h"}, "staging": {"lab_boot": True}})
    assert policy["prod"].soak == 3600
    make_build(fake_store, "base", "good")
    channels.publish(db, fake_store, "base", "good", "dev")
    with pytest.raises(GateError, match=r"promotion gates of staging: .* no passed lab boot test"):
        channels.promote(db, fake_store, "base", "dev", "staging", policy=policy)
    with db.write() as repo:
        repo.record_gate("base", "good", LAB_BOOT, True, _time.time(), "run r1")
    assert channels.promote(db, fake_store, "base", "dev", "staging", policy=policy).applied
    with pytest.raises(GateError, match=r"0 of 2 host\(s\) in sync on it for 3600 s"):
        channels.promote(db, fake_store, "base", "staging", "prod", policy=policy)
    report = ObservedReport("base", "good", "2026-12-01T00:00:00Z", "h", 1.0, (), "1")
    with db.write() as repo:
        for i in range(2):
            repo.ensure_host(f"h{i}", normalize_mac(f"52:54:00:00:00:0{i}"))
            repo.set_observed(f"h{i}", report, _time.time() - 7200)  # in sync for two hours
    res = channels.promote(db, fake_store, "base", "staging", "prod", policy=policy)
    assert res.applied and not res.change.forced
    forced = channels.promote(db, fake_store, "base", "dev", "qa", policy={"qa": policy["prod"]})
    assert forced.applied  # qa has the same gates and the evidence is there


def test_promotion_gate_override_is_forced_and_recorded(db, fake_store):
    from toolkit.store.policy import parse_policy

    policy = parse_policy({"prod": {"lab_boot": True}})
    make_build(fake_store, "base", "good")
    channels.publish(db, fake_store, "base", "good", "dev")
    res = channels.promote(db, fake_store, "base", "dev", "prod", policy=policy, force=True, reason="INC-9")
    assert res.change.forced and channels.history(db, "base", "prod")[-1].reason == "INC-9"
