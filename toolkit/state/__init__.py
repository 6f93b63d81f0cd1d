"""Fleet state: channels and their history, hosts, boot events, tokens, the reimage journal.

``open_state(settings)`` is the one way every verb opens it: PostgreSQL when ``state_url`` is set
(``golden.yaml`` or ``GOLDEN_STATE_URL``), otherwise SQLite under ``<home>``. All SQL lives in
this package.
"""

from __future__ import annotations

from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.state.db import SQLiteStateDB, StateDB
from toolkit.state.postgres import PostgresStateDB, is_postgres_url, redact_url


def open_state(settings: Settings) -> StateDB:
    """The state database this home uses."""
    if settings.state_url:
        return open_url(settings.state_url)
    return SQLiteStateDB(settings.state_db)


def open_url(url: str) -> StateDB:
    """The PostgreSQL database at ``url`` (a bad URL is bad input: exit 2)."""
    if not is_postgres_url(url):
        raise InputError(f"state_url must be a postgresql:// URL, got {redact_url(url)!r}",
                         hint="set state_url in golden.yaml or GOLDEN_STATE_URL to postgresql://user@host/db")
    return PostgresStateDB(url)
