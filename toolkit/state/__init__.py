"""Fleet state: channels and their history, hosts, boot events, tokens, the reimage journal.

``open_state(settings)`` is the one way every verb opens it. All SQL lives in this package.
"""

from __future__ import annotations

from toolkit.core.config import Settings
from toolkit.state.db import StateDB


def open_state(settings: Settings) -> StateDB:
    """The state database of this home (SQLite under ``<home>``)."""
    return StateDB(settings.state_db)
