"""The state home and its database are private to their owner, checked every time state is opened.

The database holds the boot-token HMAC key and every issued nonce: anyone who can read it can
forge a machine's report. So the home is 0700 and the database files 0600, like OpenSSH wants
its keys: a looser mode on something we own is tightened (one warning line), and a file or folder
owned by someone else is refused with one line saying what to fix. A database that is empty or
not SQLite is refused too, never silently re-initialised over (that would drop every channel).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from toolkit.core.errors import InputError

log = logging.getLogger("golden.state")

SQLITE_MAGIC = b"SQLite format 3\x00"
DB_SIDE_FILES = ("-wal", "-shm", "-journal")


class NotPrivateError(InputError):
    """A state folder or file is readable by others and cannot be made private by us."""


def _tighten(path: Path, st: os.stat_result, mode: int) -> None:
    if st.st_mode & 0o777 & ~mode == 0:
        return
    if st.st_uid != os.geteuid():
        raise NotPrivateError(f"{path} is mode {st.st_mode & 0o777:o} and owned by uid {st.st_uid}, not by us",
                              hint=f"as its owner: chmod {mode:o} {path}")
    try:
        os.chmod(path, mode)
    except OSError as exc:
        raise NotPrivateError(f"{path} is mode {st.st_mode & 0o777:o} and cannot be made {mode:o}: {exc.strerror}",
                              hint=f"chmod {mode:o} {path}") from None
    log.warning("golden: %s was mode %o, readable by others; made it %o", path, st.st_mode & 0o777, mode)


def private_dir(path: Path) -> None:
    """``path`` exists as a folder only its owner can enter: created 0700, or a looser one tightened."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except FileNotFoundError:
        raise InputError(f"cannot create the state folder {path}: {path.parent} does not exist",
                         hint="create the parent folder, or pass an existing --home") from None
    except OSError as exc:
        if not path.is_dir():
            raise InputError(f"cannot create the state folder {path}: {exc.strerror}") from None
    _tighten(path, path.stat(), 0o700)


def private_db(path: Path) -> None:
    """The database file (and its WAL and shared-memory files): refused when empty or foreign, else 0600.

    A new one is made complete under a temporary name and linked into place, so no other process
    ever sees an empty ``state.db`` (which would be refused) or one readable by others.
    """
    if not path.exists():
        _create_db(path)
    check_db_file(path)
    for suffix in ("", *DB_SIDE_FILES):
        side = path.with_name(path.name + suffix)
        try:
            _tighten(side, side.stat(), 0o600)
        except FileNotFoundError:
            continue


def check_db_file(path: Path) -> None:
    """InputError unless ``path`` starts like an SQLite database (an empty file is no database)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise InputError(f"cannot read the state database {path}: {exc.strerror}") from None
    if not head:
        raise InputError(f"the state database {path} is empty (0 bytes): refusing to start a new one over it",
                         hint="restore it from a backup, or remove it to start with empty state")
    if head != SQLITE_MAGIC:
        raise InputError(f"{path} is not an SQLite database: refusing to use it as golden's state",
                         hint="point --home (or GOLDEN_HOME) at a golden state home")


def _create_db(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp)
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)")
        conn.commit()
        conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another golden process made it first: everyone uses that one
    finally:
        tmp.unlink(missing_ok=True)


def refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """InputError when the database holds tables but none of golden's migrations: another program's."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if names and "schema_migrations" not in names:
        raise InputError(f"{path} is another program's SQLite database (tables: {', '.join(sorted(names)[:3])})",
                         hint="point --home (or GOLDEN_HOME) at a golden state home")


def writable(path: Path) -> bool:
    """Whether golden can write the database: the file, its folder (for the WAL) and its side files."""
    sides = [path.with_name(path.name + x) for x in ("-wal", "-shm")]
    return os.access(path.parent, os.W_OK) and all(os.access(p, os.W_OK) for p in [path, *sides] if p.exists())


def open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that only reads and never maps or locks anything: fail open on a read-only home.

    ``immutable=1`` tells SQLite nothing changes the file: no locks, no shared-memory WAL index (whose
    mapping SIGBUSes once its file cannot grow). Writes left in a WAL nobody can fold in are not
    seen: the boot server answers from the database as its last checkpoint left it.
    """
    conn = sqlite3.connect(f"{path.resolve().as_uri().replace('file://', 'file:', 1)}?immutable=1", uri=True,
                           isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn
