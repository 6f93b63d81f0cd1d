"""Criterion 4 of issue 24: unauthenticated requests (forged reports, random MACs) are counted per
client address and hour, with hard caps, instead of a row each: 10,000 of them over real HTTP grow
the state database by less than 1 MB."""

from __future__ import annotations

import http.client
import json
import random
import threading
from pathlib import Path

from tests.unit.test_bootserver import MAC1, Env, start_env, stop_env
from toolkit.state.db import SQLiteStateDB
from toolkit.state.evidence import UNKNOWN_MACHINES_MAX

REQUESTS = 10_000
CLIENTS = 4


def _db_bytes(db: SQLiteStateDB) -> int:
    """The database file once its write-ahead log is folded in (the log's size is SQLite's, not ours)."""
    db._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Path(db.path).stat().st_size


def _forged(rng: random.Random) -> bytes:
    token = f"{rng.getrandbits(128):032x}.1796600000.-.{rng.getrandbits(256):064x}"
    return json.dumps({"mac": MAC1, "build_id": "b2", "image": "base", "token": token, "hostname": "x",
                       "booted_at": "2026-12-01T00:00:00Z", "uptime_s": 1, "drift": [], "agent_version": "1"}).encode()


def _hammer(e: Env, seed: int, n: int, codes: list[int]) -> None:
    rng = random.Random(seed)
    conn = http.client.HTTPConnection(*e.server.server_address[:2], timeout=30)  # keep-alive, as a flood would
    for i in range(n):
        if i % 2:
            conn.request("POST", "/report", _forged(rng), {"Content-Type": "application/json"})
        else:
            mac = ":".join(f"{rng.getrandbits(8):02x}" for _ in range(6))
            conn.request("GET", f"/boot/{mac}.ipxe")
        resp = conn.getresponse()
        resp.read()
        codes.append(resp.status)
    conn.close()


def test_ten_thousand_unauthenticated_requests_grow_the_database_by_under_1_mb(tmp_path: Path) -> None:
    """Measured on the SQLite file; the same statements run on PostgreSQL in the evidence-model tests."""
    env = start_env(tmp_path, SQLiteStateDB(tmp_path / "state" / "state.db"))
    try:
        _flood_and_measure(env)
    finally:
        stop_env(env)


def _flood_and_measure(env: Env) -> None:
    assert isinstance(env.db, SQLiteStateDB)
    before = _db_bytes(env.db)
    codes: list[int] = []
    workers = [threading.Thread(target=_hammer, args=(env, s, REQUESTS // CLIENTS, codes)) for s in range(CLIENTS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    assert sorted(set(codes)) == [200, 403] and len(codes) == REQUESTS
    grown = _db_bytes(env.db) - before
    with env.db.read() as repo:
        noise = repo.list_noise()
        rows = repo.count_rows()
    print(f"{REQUESTS} unauthenticated requests grew the database by {grown} bytes; {len(noise)} noise rows, "
          f"{rows['unknown_machines']} unknown machines, {rows['boot_events']} boot events")
    assert grown < 1 << 20
    assert rows["unknown_machines"] == UNKNOWN_MACHINES_MAX and rows["boot_events"] == 0
    assert sum(n.count for n in noise) == REQUESTS  # every one still counted


def test_counted_noise_is_capped_per_window_and_pruned(state_db) -> None:
    """Past the cap a new address counts under "(other)"; the pruner forgets windows past retention."""
    from toolkit.boot.retention import RetentionPolicy, prune_state
    from toolkit.state.evidence import NOISE_KEYS_PER_WINDOW, NOISE_OTHER

    t0 = 1_800_000_000.0
    with state_db.write() as repo:
        for i in range(NOISE_KEYS_PER_WINDOW + 50):
            repo.count_noise("reject:forged", f"10.0.{i // 256}.{i % 256}", t0 + i, "x")
        repo.count_noise("reject:forged", "10.0.0.0", t0 + 1)  # an address already counted: its own row
    with state_db.read() as repo:
        rows = repo.list_noise()
    assert len(rows) == NOISE_KEYS_PER_WINDOW + 1
    assert {r.key: r.count for r in rows}[NOISE_OTHER] == 50 and {r.key: r.count for r in rows}["10.0.0.0"] == 2
    pruned = prune_state(state_db, RetentionPolicy(events_s=3600), now=t0 + 2 * 3600)
    assert pruned.noise == NOISE_KEYS_PER_WINDOW + 1
    with state_db.read() as repo:
        assert repo.list_noise() == []
