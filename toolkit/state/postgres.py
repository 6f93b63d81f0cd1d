"""The state database in PostgreSQL: the scale-out backend (``state_url: postgresql://...``).

The same ``Repo`` queries and migrations as SQLite, through a ``psycopg_pool.ConnectionPool``
(autocommit connections; we issue BEGIN/COMMIT ourselves so each transaction says what it is).

Write serialization: every write transaction takes one transaction-scoped advisory lock first
(``pg_advisory_xact_lock``), the same guarantee as SQLite's BEGIN IMMEDIATE: racing
read-modify-write commands queue, and nothing a caller wrote inside ``with db.write()`` ever has
to be replayed. SERIALIZABLE was the alternative, but it fails a conflicting transaction at
commit and the only correct answer is to re-run the caller's block, which a context manager
cannot do (and boot-script handlers have side effects, tokens handed out, that must not repeat).
Measured here (unix socket, a shared 2-core machine, 1,000 one-insert transactions): ~0.6 ms
each with the lock taken in the BEGIN's round trip, 0.4-1.1 ms without it or under SERIALIZABLE:
the lock costs less than the noise for one writer. With several boot-server replicas it is what
limits them (bench/scale_out.py): the boot hot path (boot tokens, agent reports) therefore uses
``write_rows()``, plain READ COMMITTED whose statements are atomic on their rows, and everything
else keeps the lock.

Outages: a transaction that cannot get a working connection, or whose BEGIN fails because the
server went away, is tried again for up to ``reconnect_s`` seconds (0, fail at once, unless the
owner sets it: the rollout controller waits through a PostgreSQL restart, ``golden serve`` keeps
failing open). Only that is retried: nothing of the caller's block has run yet, so trying again
repeats nothing. A connection lost inside the block, or at COMMIT, is an error as before, since
the block may have acted (a power cycle) and cannot be re-run blindly. The wait and the recovery
are each one warning in the log.

Secrets: the URL's password never reaches a message; everything names ``where`` (the URL with
its password replaced by ``***``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from toolkit.core.errors import GoldenError, InputError
from toolkit.state.db import Repo, StateDB, StateError, StateWriteError
from toolkit.state.schema import (
    MIGRATIONS,
    NUMBERED_TABLES,
    TABLES,
    Migration,
    postgres_ddl,
    postgres_query,
    split_statements,
)
from toolkit.state.url import redact_url, scrub

log = logging.getLogger("golden.state")

# One key for golden's write lock (advisory locks are per database): b"golden" as an integer.
WRITE_LOCK = int.from_bytes(b"golden", "big")
POOL_TIMEOUT_S = 5.0   # a boot-script request waits at most this long for a connection
CONNECT_TIMEOUT_S = 5
POOL_MAX = 8
RECONNECT_POLL_S = 0.5  # between attempts to reach a server that went away

_SQLSTATE_READ_ONLY = "25006"
_SQLSTATE_DISK_FULL = "53100"
_SQLSTATE_CONNECTION = ("08", "57P")  # connection exceptions; the server shutting down or restarting


class TargetNotEmptyError(InputError):
    """``golden state migrate`` was pointed at a database that already holds golden state."""


class _PgConnection:
    """A psycopg connection as ``Repo`` uses it: ``?`` placeholders, rows as dicts."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        return self._conn.execute(_translated(sql), parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> Any:
        cur = self._conn.cursor()
        cur.executemany(_translated(sql), seq_of_parameters)
        return cur


@lru_cache(maxsize=512)
def _translated(sql: str) -> str:
    return postgres_query(sql)


class PostgresStateDB(StateDB):
    """Golden's state in one PostgreSQL database. Thread-safe: connections come from a pool."""

    def __init__(self, url: str, *, max_size: int = POOL_MAX, reconnect_s: float = 0.0) -> None:
        self._url = url
        self.reconnect_s = reconnect_s
        self._where = redact_url(url)
        # threads waiting out one outage (the executor, its lease keeper...): the first says it began,
        # the last says it ended, so an outage is two lines however many threads met it
        self._outage_lock = threading.Lock()
        self._outage_waiters = 0
        self._outage_since = 0.0
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url, min_size=1, max_size=max_size, open=False, timeout=POOL_TIMEOUT_S, name="golden-state",
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT_S,
                    "application_name": "golden"},
            check=ConnectionPool.check_connection)  # check: a server restart costs no request
        try:
            # One direct connection first: it fails at once with the server's reason (refused,
            # authentication, no such database), where the pool would only time out.
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
            self._pool.open(wait=True, timeout=POOL_TIMEOUT_S + CONNECT_TIMEOUT_S)
        except (PoolTimeout, psycopg.Error) as exc:
            self._pool.close()
            raise self._unreachable(exc, StateError) from None
        self.migrate(MIGRATIONS)

    @property
    def where(self) -> str:
        """The URL with its password redacted."""
        return self._where

    def close(self) -> None:
        """Close the connection pool."""
        self._pool.close()

    def size_bytes(self) -> int:
        """The database's size on disk (tables, indexes, TOAST), as PostgreSQL counts it."""
        with self._raw_transaction(("BEGIN",), StateError) as conn:
            row = conn.execute("SELECT pg_database_size(current_database()) AS n").fetchone()
            return int(row["n"]) if row else 0

    def _detail(self, exc: Exception) -> str:
        return scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, self._url)

    def _unreachable(self, exc: Exception, kind: type[StateError]) -> StateError:
        return kind(f"cannot reach the state database {self._where}: {self._detail(exc)}",
                    hint="check that PostgreSQL is running and that state_url (or GOLDEN_STATE_URL) is right")

    def _error(self, exc: psycopg.Error, kind: type[StateError]) -> GoldenError:
        state = exc.sqlstate or ""
        if state == _SQLSTATE_READ_ONLY:
            return StateWriteError(f"state database is read-only: {self._where}",
                                   hint="point state_url at the primary server, not a standby")
        if state == _SQLSTATE_DISK_FULL:
            return StateWriteError(f"state database is full: {self._where}",
                                   hint="free space on the PostgreSQL server's data volume")
        if _lost(exc):
            return self._unreachable(exc, kind)
        first = scrub((str(exc).strip().splitlines() or [type(exc).__name__])[0], self._url)
        verb = "write" if kind is StateWriteError else "read"
        return kind(f"cannot {verb} the state database {self._where}: {first}")

    @contextmanager
    def _connection(self, kind: type[StateError]) -> Iterator[psycopg.Connection[Any]]:
        try:
            conn = self._pool.getconn()
        except PoolTimeout as exc:
            raise self._unreachable(exc, kind) from None
        try:
            yield conn
        finally:
            self._pool.putconn(conn)  # the pool rolls back anything left open, or discards a broken one

    @contextmanager
    def _transaction(self, begin: Sequence[str], kind: type[StateError]) -> Iterator[Repo]:
        with self._raw_transaction(begin, kind) as conn:
            yield Repo(_PgConnection(conn))

    @contextmanager
    def _raw_transaction(self, begin: Sequence[str], kind: type[StateError]) -> Iterator[psycopg.Connection[Any]]:
        conn = self._begun(begin, kind)
        try:
            yield conn
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            _rollback(conn)
            raise self._error(exc, kind) from None
        except BaseException:
            _rollback(conn)
            raise
        finally:
            self._pool.putconn(conn)  # the pool rolls back anything left open, or discards a broken one

    def _begun(self, begin: Sequence[str], kind: type[StateError]) -> psycopg.Connection[Any]:
        """A pooled connection inside a new transaction; while the server cannot be reached, tried
        again until ``reconnect_s`` has passed since the first failure."""
        down_since: float | None = None
        recovered = False
        try:
            while True:
                try:
                    conn = self._begin_once(begin)
                except (PoolTimeout, psycopg.Error) as exc:
                    if isinstance(exc, psycopg.Error) and not _lost(exc):
                        raise self._error(exc, kind) from None
                    down_since = self._wait_or_fail(exc, kind, down_since)
                    time.sleep(RECONNECT_POLL_S)
                    continue
                recovered = True
                return conn
        finally:  # however this thread leaves an outage it waited in (back, given up, another error, ^C)
            if down_since is not None:
                self._outage_ends(recovered=recovered)

    def _begin_once(self, begin: Sequence[str]) -> psycopg.Connection[Any]:
        conn = self._pool.getconn()
        try:
            for stmt in begin:
                conn.execute(stmt)
        except BaseException:
            self._pool.putconn(conn)
            raise
        return conn

    def _wait_or_fail(self, exc: Exception, kind: type[StateError], down_since: float | None) -> float:
        """Raise when the wait is over (or there is none); else say so once and return since when."""
        now = time.monotonic()
        since = now if down_since is None else down_since
        if now - since >= self.reconnect_s:
            raise self._unreachable(exc, kind) from None
        if down_since is None:
            self._outage_begins(exc)
        return since

    def _outage_begins(self, exc: Exception) -> None:
        with self._outage_lock:
            self._outage_waiters += 1
            first = self._outage_waiters == 1
            if first:
                self._outage_since = time.monotonic()
        if first:
            log.warning("state database %s unreachable (%s); waiting up to %g s for it to come back",
                        self._where, self._detail(exc), self.reconnect_s)

    def _outage_ends(self, *, recovered: bool) -> None:
        with self._outage_lock:
            self._outage_waiters -= 1
            last = self._outage_waiters == 0
        if last and recovered:
            log.warning("state database %s reachable again after %.1f s; continuing", self._where,
                        time.monotonic() - self._outage_since)

    def write(self) -> AbstractContextManager[Repo]:
        """A write transaction holding golden's write lock from its first statement (see the module docstring)."""
        return self._transaction(self._write_begin(), StateWriteError)

    def write_rows(self) -> AbstractContextManager[Repo]:
        """READ COMMITTED without the write lock: concurrent updates of one row queue on the row's lock and
        re-check their WHERE, so a conditional UPDATE (spend a token once) has exactly one winner."""
        return self._transaction(("BEGIN",), StateWriteError)

    def read(self) -> AbstractContextManager[Repo]:
        """A consistent snapshot: REPEATABLE READ, so several queries see the same state."""
        return self._transaction(("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",), StateError)

    def import_state(self, source: StateDB) -> dict[str, int]:
        """Copy every table of ``source`` into this (empty) database in one transaction; rows per table.

        Refuses a database that already holds golden state: merging two fleets' histories is not a copy.
        """
        with source.read() as src, self._raw_transaction(self._write_begin(), StateWriteError) as conn:
            dst = Repo(_PgConnection(conn))
            held = dst.nonempty_tables()
            if held:
                raise TargetNotEmptyError(
                    f"{self._where} already holds golden state ({', '.join(held)}); "
                    "state migrate copies only into an empty database",
                    hint="point --to at a new database (createdb), or drop this one's golden tables first")
            counts = {}
            for table in TABLES:
                rows = src.dump_table(table)
                dst.load_table(table, rows)
                counts[table] = len(rows)
            _renumber(conn)
        return counts

    def _write_begin(self) -> tuple[str, ...]:
        # One round trip: BEGIN and the lock in one simple query (no parameters).
        return (f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})",)

    def _applied(self, conn: psycopg.Connection[Any]) -> set[str]:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS present").fetchone()
        if not exists or not exists["present"]:
            return set()
        return {r["name"] for r in conn.execute("SELECT name FROM schema_migrations").fetchall()}

    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
        """Apply the migrations not applied yet, in order, in one transaction holding the write lock.

        Two processes starting at once: the second waits on the lock, then finds the work done.
        """
        with self._connection(StateError) as conn:
            try:
                if all(m.name in self._applied(conn) for m in migrations):
                    return []
                return self._apply(conn, migrations)
            except psycopg.Error as exc:
                _rollback(conn)
                raise StateError(f"cannot migrate the state database {self._where}: "
                                 f"{scrub(str(exc).strip().splitlines()[0], self._url)}") from None

    def _apply(self, conn: psycopg.Connection[Any], migrations: Sequence[Migration]) -> list[str]:
        conn.execute("BEGIN")
        conn.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, "
                     "applied_at DOUBLE PRECISION)")
        done = self._applied(conn)  # again, under the lock: another process may have just migrated
        applied: list[str] = []
        for m in migrations:
            if m.name in done:
                continue
            for stmt in split_statements(m.sql):
                conn.execute(postgres_ddl(stmt))
            conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (%s, %s)", (m.name, time.time()))
            applied.append(m.name)
        conn.execute("COMMIT")
        return applied


def _renumber(conn: psycopg.Connection[Any]) -> None:
    # Copied rows kept their ids; move each identity counter past them so new rows do not collide.
    for table in NUMBERED_TABLES:  # our own constant names, hence no S608 worry
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                     f"COALESCE(MAX(id), 0) + 1, false) FROM {table}")


def _lost(exc: psycopg.Error) -> bool:
    """Whether the error is the connection's, not the statement's: the server gone, restarting or unreachable."""
    state = exc.sqlstate or ""
    return state.startswith(_SQLSTATE_CONNECTION) or (isinstance(exc, psycopg.OperationalError) and not state)


def _rollback(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        pass
