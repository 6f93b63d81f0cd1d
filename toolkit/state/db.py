"""The state database: channels and their audit history, fleet state, boot events, used tokens.

``StateDB`` is what every caller holds; ``SQLiteStateDB`` (here) is the embedded default and
``PostgresStateDB`` (``postgres.py``) the scale-out one. Both run the same ``Repo`` queries and
the same migrations (``schema.py``), recorded in ``schema_migrations``.

SQLite: every connection runs in WAL mode with a busy timeout, so readers never block the writer
and concurrent golden commands queue instead of failing. ``write()`` takes the write lock up front
(BEGIN IMMEDIATE): a command reads the current value and writes its change under the same lock,
so two racing commands cannot both act on a stale read.

All SQL lives in this package behind ``Repo`` methods (named for what callers need: channels,
hosts, boot events, tokens, the reimage journal); callers never see a cursor or a statement.
``Repo`` (``repo.py``) composes one room per family of tables, each module with its row types.
Queries are written once, with ``?`` placeholders, in SQL both engines accept
(``ON CONFLICT``, ``RETURNING``, ``IS NOT DISTINCT FROM``, the quoted ``"user"`` column).

When the database cannot be written (a full disk, a read-only file system) a write raises
``StateWriteError`` with one line naming the path; the boot server catches it and keeps answering
from what it can read.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from toolkit.core.errors import GoldenError, StoreError
from toolkit.state.access import AuditRow, GrantRow, LoginRow, TaintRow
from toolkit.state.boots import AttemptRow, BootEventRow, TokenRow
from toolkit.state.channels import ChannelRow, HistoryRow
from toolkit.state.hosts import DriftRow, HostRow, ObservedReport, UnknownMachineRow
from toolkit.state.leases import LeaseRow
from toolkit.state.private import open_read_only, private_db, private_dir, refuse_foreign, writable
from toolkit.state.repo import Repo
from toolkit.state.room import Connection
from toolkit.state.runs import NewStep, RunRow, StepRow
from toolkit.state.schema import MIGRATIONS, Migration, split_statements

# The row types live in their rooms; they are named here too so callers keep one import for the state layer.
__all__ = [
    "BUSY_TIMEOUT_MS", "AttemptRow", "AuditRow", "BootEventRow", "ChannelRow", "Connection", "DriftRow",
    "GrantRow", "HistoryRow", "HostRow", "LeaseRow", "LoginRow", "NewStep", "ObservedReport", "Repo",
    "RunRow", "SQLiteStateDB", "StateDB", "StateError", "StateWriteError", "StepRow", "TaintRow", "TokenRow",
    "UnknownMachineRow",
]

BUSY_TIMEOUT_MS = 30_000
log = logging.getLogger("golden.state")


class StateError(GoldenError):
    """The state database cannot be opened or migrated."""


class StateWriteError(StateError):
    """The state database cannot be written now (full disk, read-only file system or file)."""


def _write_error(path: Path, exc: sqlite3.Error) -> GoldenError:
    text = str(exc).lower()
    if "full" in text:
        return StateWriteError(f"state database is full: {path}", hint="free space on that file system")
    if "readonly" in text or "read-only" in text or "read only" in text:
        return StateWriteError(f"state database is read-only: {path}",
                               hint="check that file system and the file's permissions")
    if "locked" in text or "busy" in text:
        return StoreError(f"the state database {path} stayed locked: {exc}",
                          hint="another golden command is writing; retry when it finishes")
    return StateWriteError(f"cannot write the state database {path}: {exc}")


class StateDB(ABC):
    """The state database, whichever engine holds it. Callers use only these methods and ``Repo``.

    ``write()`` holds the database's one write lock from its first statement to its commit, so a
    command's read-modify-write never acts on a stale read; ``read()`` is a consistent snapshot.
    """

    # How long a transaction waits for a server that went away before failing (PostgreSQL; a file
    # never goes away). 0 fails at once; the rollout controller waits (see toolkit/state/postgres.py).
    reconnect_s: float = 0.0

    @property
    @abstractmethod
    def where(self) -> str:
        """What messages name: a file path, or a URL with its password redacted."""

    @abstractmethod
    def write(self) -> AbstractContextManager[Repo]:
        """A write transaction holding the database's write lock from its first statement."""

    def write_rows(self) -> AbstractContextManager[Repo]:
        """A write transaction for the boot hot path whose statements are each atomic on the rows they
        touch (a conditional UPDATE that reports whether it won, an upsert, an append): an engine
        with row locks runs these side by side instead of queueing them behind the one write lock.
        Callers must not act on a value read earlier in the block unless a row lock protects it.
        """
        return self.write()

    @abstractmethod
    def read(self) -> AbstractContextManager[Repo]:
        """A consistent snapshot for reading."""

    @abstractmethod
    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
        """Apply the migrations not applied yet; return their names."""

    @abstractmethod
    def close(self) -> None:
        """Close the connections."""


class SQLiteStateDB(StateDB):
    """One state database file. Thread-safe: each thread gets its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        # Writers of one process queue here rather than in SQLite's busy handler, which polls with
        # sleeps of up to 100 ms: with a few boot-server threads writing at once that was most of
        # a boot script's latency. Other processes still meet SQLite's lock (and busy_timeout).
        self._write_lock = threading.Lock()
        self._pid = os.getpid()
        self._generation = 0  # bumped to make every thread reopen its connection (see _read_only)
        private_dir(path.parent)  # the key and every nonce live here: 0700, the files 0600 (state.private)
        private_db(path)
        self.read_only = not writable(path)
        if self.read_only:
            log.warning("golden: the state database %s is read-only: reading it as it is, writes will fail", path)
        self.migrate(MIGRATIONS)

    @property
    def where(self) -> str:
        """The database file's path."""
        return str(self.path)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "generation", 0) != self._generation:
            conn.close()  # opened before the database became read-only
            conn = None
        if conn is None:
            try:
                conn = open_read_only(self.path) if self.read_only else self._open()
            except sqlite3.Error as exc:
                raise StateError(f"cannot open the state database {self.path}: {exc}",
                                 hint="check the path and its permissions (settings home)") from None
            self._local.conn, self._local.generation = conn, self._generation
        return conn

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves, so the write lock is taken when we say.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _went_read_only(self) -> None:
        """The files or their folder stopped being writable (read-only mount, chattr +i): from now on every
        thread reads through an immutable connection, which maps no shared memory that could SIGBUS.
        Checked (a few access(2) calls) before every transaction: the SIGBUS comes on the first touch."""
        if self.read_only or writable(self.path):
            return
        self.read_only = True
        self._generation += 1
        log.warning("golden: the state database %s became read-only: reading it as it is, writes will fail",
                    self.path)

    def size_bytes(self) -> int:
        """Pages in use by the database file, in bytes (free pages from pruning are reused, not counted)."""
        conn = self._conn()
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])

    def file_bytes(self) -> int:
        """The database file and its write-ahead log on disk."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def write(self) -> Iterator[Repo]:
        """A write transaction holding the database's write lock from its first statement."""
        if os.getpid() != self._pid:  # a forked child (BMC workers): the parent's lock may have been held
            self._write_lock, self._pid = threading.Lock(), os.getpid()
        with self._write_lock:
            yield from self._write()

    def _write(self) -> Iterator[Repo]:
        self._went_read_only()
        if self.read_only:
            raise StateWriteError(f"state database is read-only: {self.path}",
                                  hint="check that file system and the file's permissions")
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._went_read_only()
            raise _write_error(self.path, exc) from None
        try:
            yield Repo(conn)
        except sqlite3.Error as exc:
            _rollback(conn)
            self._went_read_only()
            raise _write_error(self.path, exc) from None
        except BaseException:
            _rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise _write_error(self.path, exc) from None

    @contextmanager
    def read(self) -> Iterator[Repo]:
        """A consistent snapshot for reading (several queries see the same state)."""
        self._went_read_only()  # before the connection touches a WAL index that can no longer grow
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield Repo(conn)
        finally:
            conn.execute("ROLLBACK")

    def _applied(self, conn: sqlite3.Connection) -> set[str]:
        try:
            return {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
        except sqlite3.OperationalError:
            return set()  # a new database: no table yet

    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
        """Apply the named migrations not applied yet, in order; return the names applied.

        An up-to-date database is only read, so a read-only or full one still opens (and serves boots).
        """
        conn = self._conn()
        if all(m.name in self._applied(conn) for m in migrations):
            return []
        refuse_foreign(conn, self.path)
        applied: list[str] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)")
                done = self._applied(conn)  # again, under the lock: another process may have just migrated
                for m in migrations:
                    if m.name in done:
                        continue
                    for stmt in split_statements(m.sql):
                        conn.execute(stmt)
                    conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                                 (m.name, time.time()))
                    applied.append(m.name)
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"cannot migrate the state database {self.path}: {exc}") from None
        return applied


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass
