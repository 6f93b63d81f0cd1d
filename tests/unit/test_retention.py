"""Bounded boot state: what the pruner deletes, what it must keep, and a fleet's month in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.boot.retention import RetentionPolicy, cutoffs, prune_state
from toolkit.state.db import ObservedReport, SQLiteStateDB, StateDB, TokenRow

DAY = 86400.0
T0 = 1_700_000_000.0
POLICY = RetentionPolicy()  # 7 days of events, 4 h token lifetime, spent tokens kept 10 min


@pytest.fixture
def db(tmp_path: Path) -> StateDB:
    return SQLiteStateDB(tmp_path / "state.db")


def _token(n: int, host: str, at: float, used: float | None = None, source: str = "report",
           attempt: str = "") -> TokenRow:
    return TokenRow(f"{n:032x}", "52:54:00:00:00:01", host, "b1", attempt, at, "10.0.0.1", used, source)


def test_cutoffs_are_pure_and_an_armed_attempt_holds_the_events_back() -> None:
    c = cutoffs(POLICY, T0, None)
    assert (c.spent_before, c.issued_before, c.events_before) == (T0 - 600, T0 - POLICY.token_ttl_s, T0 - 7 * DAY)
    assert cutoffs(POLICY, T0, T0 - 9 * DAY).events_before == T0 - 9 * DAY
    assert cutoffs(POLICY, T0, T0 - DAY).events_before == T0 - 7 * DAY


def test_prune_keeps_what_a_controller_waits_for(db: StateDB) -> None:
    now = T0 + 30 * DAY
    with db.write() as repo:
        repo.insert_token(_token(1, "a", now - 3600))  # unspent, not expired: kept
        repo.insert_token(_token(2, "a", now - 5 * 3600))  # unspent, expired: deleted
        repo.insert_token(_token(3, "a", now - 3600, used=now - 60))  # spent a minute ago: kept (named a replay)
        repo.insert_token(_token(4, "a", now - 3600, used=now - 3000))  # spent long ago: deleted
        repo.insert_token(_token(5, "b", now - 60, source="boot", attempt="a" * 16))  # an armed attempt's: kept
        repo.arm_attempt("b", "a" * 16, "b1", now - 10 * DAY, now + DAY)  # a reimage waiting for 10 days
        old = repo.add_event("served", now - 12 * DAY, host="c")  # before the attempt and the window: deleted
        held = repo.add_event("report", now - 9 * DAY, host="b")  # past the window, after the attempt: kept
        new = repo.add_event("report", now - DAY, host="b")
        repo.record_unknown("52:54:00:99:99:99", now - 8 * DAY, None)
    result = prune_state(db, POLICY, now)
    assert (result.spent_tokens, result.expired_tokens, result.events, result.unknown_machines) == (1, 1, 1, 1)
    with db.read() as repo:
        assert [repo.get_token(f"{n:032x}") is not None for n in range(1, 6)] == [True, False, True, False, True]
        assert [e.id for e in repo.events_after(0)] == [held, new]
        assert repo.events_after(old) and repo.last_event_before(now) == new  # feed cursors still work
    with db.write() as repo:
        repo.disarm_attempt("b", "a" * 16, now)
    assert prune_state(db, POLICY, now).events == 1  # disarmed: the window alone decides


def test_prune_works_in_batches(db: StateDB) -> None:
    with db.write() as repo:
        for i in range(120):
            repo.add_event("unknown", T0 + i)
    assert prune_state(db, RetentionPolicy(batch=50), T0 + 8 * DAY).events == 120


# ---- a fleet's month ----
HOSTS = 10_000
REPORT_EVERY = 300.0  # the agent's default interval
TICK = 3 * DAY  # compressed clock: one pruning pass per simulated tick
DAYS = 30
REBOOTS_PER_DAY = 0.02  # 2% of the fleet boots (and reports news) every day
UNKNOWN_LOOPERS = 5  # machines not in the inventory, PXE-booting every 2 minutes, for ever
SIZE_LIMIT = 24 * 2**20  # measured: ~14 MB (see the test's docstring)


def _report(build: str) -> ObservedReport:
    return ObservedReport("base", build, "2024-01-01T00:00:00+00:00", "node", 10.0, (), "1.0.0")


def _reports(repo: object, hosts: list[str], current: dict[str, str], end: float, seq: list[int]) -> None:
    """Every host's last three reports before ``end``: each spends its token and takes the next one."""
    for h in hosts:
        repo.spend_token(current[h], end - 2 * REPORT_EVERY)  # type: ignore[attr-defined]
        for k in (2, 1):  # issued by one report, spent by the next, both within the grace
            seq[0] += 1
            repo.insert_token(TokenRow(f"{seq[0]:032x}", "m", h, "b1", "", end - k * REPORT_EVERY, "10.0.0.1",  # type: ignore[attr-defined]
                                       end - (k - 1) * REPORT_EVERY, "report"))
        seq[0] += 1
        current[h] = f"{seq[0]:032x}"
        repo.insert_token(TokenRow(current[h], "m", h, "b1", "", end, "10.0.0.1", None, "report"))  # type: ignore[attr-defined]
        repo.set_observed(h, _report("b1"), end)  # type: ignore[attr-defined]


def _news(repo: object, tick_start: float, hosts: list[str], current: dict[str, str], seq: list[int]) -> None:
    """A tick's boots (served + first report events) and the unknown machines' boot events."""
    boots = int(HOSTS * REBOOTS_PER_DAY * TICK / DAY)
    for i in range(boots):
        h, at = hosts[(seq[0] + i * 7919) % HOSTS], tick_start + i * TICK / boots
        repo.add_event("served", at, "m", h, "b1", "base@prod")  # type: ignore[attr-defined]
        repo.add_event("report", at + 60, "m", h, "b1", json.dumps({"drift": 0, "attempt": ""}))  # type: ignore[attr-defined]
    loops = int(TICK / 120)
    for u in range(UNKNOWN_LOOPERS):
        for k in range(loops):
            repo.add_event("unknown", tick_start + k * 120, f"52:54:00:aa:00:{u:02x}", None, None, "10.0.9.9")  # type: ignore[attr-defined]


def test_a_fleet_of_10000_hosts_for_30_days_stays_bounded(db: StateDB) -> None:
    """10,000 hosts reporting every 5 minutes for 30 days stay under 24 MB (measured: ~14 MB).

    The clock is compressed: each 3-day tick writes the reports whose rows outlive the next prune
    (each host's last three 5-minute reports before it: the tokens spent within the 10-minute grace
    and the one outstanding), the tick's boots (2% of hosts a day: a served and a report event) and
    five unknown machines PXE-looping every 2 minutes; then the pruner runs at the tick's end, as the
    server's thread does every 5 minutes. Reports in between would be written and pruned in full
    (tokens) or never become events (periodic re-reports are not news). Without pruning and with an
    event per report, the same month is 86.4 M tokens and 86.4 M events: tens of GB.
    """
    hosts = [f"node{i:05d}" for i in range(HOSTS)]
    current: dict[str, str] = {}
    seq = [0]
    with db.write() as repo:
        for i, h in enumerate(hosts):
            repo.ensure_host(h, f"52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}")
            seq[0] += 1
            current[h] = f"{seq[0]:032x}"
            repo.insert_token(TokenRow(current[h], "m", h, "b1", "", T0, "10.0.0.1", None, "boot"))
    sizes = []
    for tick in range(int(DAYS * DAY / TICK)):
        start = T0 + tick * TICK
        end = start + TICK
        with db.write() as repo:
            _news(repo, start, hosts, current, seq)
            _reports(repo, hosts, current, end, seq)
        prune_state(db, POLICY, end)
        sizes.append(db.size_bytes())
    with db.read() as repo:
        rows = repo.count_rows()
    print(f"state after {DAYS} days: {sizes[-1] / 2**20:.1f} MB in use (peak {max(sizes) / 2**20:.1f} MB), "
          f"file {db.path.stat().st_size / 2**20:.1f} MB (+ WAL {db.file_bytes() / 2**20:.1f} MB in all), rows {rows}")
    assert rows["boot_tokens"] <= HOSTS * 4  # 3 spent within the grace + 1 outstanding, per host
    assert rows["boot_events"] <= (7 + TICK / DAY) * (2 * HOSTS * REBOOTS_PER_DAY + UNKNOWN_LOOPERS * 720)
    assert max(sizes) < SIZE_LIMIT
    assert db.path.stat().st_size < SIZE_LIMIT  # freed pages are reused: the file stops growing
