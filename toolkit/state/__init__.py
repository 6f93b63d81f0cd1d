"""Fleet state: channels and their history, hosts, boot events, tokens, the reimage journal.

``open_state(settings)`` is the one way every verb opens it: PostgreSQL when ``state_url`` is set
(``golden.yaml`` or ``GOLDEN_STATE_URL``), otherwise SQLite under ``<home>``. All SQL lives in
this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.state.db import SQLiteStateDB, StateDB
from toolkit.state.schema import TABLES
from toolkit.state.url import is_postgres_url, redact_url

if TYPE_CHECKING:
    from toolkit.state.postgres import PostgresStateDB


def open_state(settings: Settings) -> StateDB:
    """The state database this home uses."""
    if settings.state_url:
        return open_url(settings.state_url)
    return SQLiteStateDB(settings.state_db)


def open_url(url: str) -> PostgresStateDB:
    """The PostgreSQL database at ``url`` (a bad URL is bad input: exit 2)."""
    if not is_postgres_url(url):
        raise InputError(f"state_url must be a postgresql:// URL, got {redact_url(url)!r}",
                         hint="set state_url in golden.yaml or GOLDEN_STATE_URL to postgresql://user@host/db")
    from toolkit.state.postgres import PostgresStateDB  # here: SQLite users never pay for importing psycopg

    return PostgresStateDB(url)


@dataclass(frozen=True)
class MigrateResult:
    """What ``golden state migrate`` copied: from where, to where, rows per table."""
    source: str
    target: str
    rows: dict[str, int]  # table -> rows copied


def migrate_to_postgres(settings: Settings, url: str | None) -> MigrateResult:
    """Copy this home's SQLite state into the empty PostgreSQL at ``url`` (default: ``state_url``)."""
    url = url or settings.state_url
    if not url:
        raise InputError("state migrate needs a target", hint="pass --to postgresql://user@host/db or set state_url")
    if _has_password(url):
        raise InputError(f"{redact_url(url)}: a password on the command line is visible to every user (ps)",
                         hint="put it in ~/.pgpass or PGPASSWORD, or give the URL in GOLDEN_STATE_URL")
    if not settings.state_db.is_file():
        raise InputError(f"no SQLite state to migrate at {settings.state_db}",
                         hint="pass --home (or GOLDEN_HOME) for the home that holds state.db")
    source = SQLiteStateDB(settings.state_db)
    target = open_url(url)
    try:
        rows = target.import_state(source)
    finally:
        target.close()
        source.close()
    return MigrateResult(source.where, target.where, {t: rows.get(t, 0) for t in TABLES})


def _has_password(url: str) -> bool:
    return redact_url(url) != url
