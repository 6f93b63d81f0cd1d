"""The artifact store (immutable builds by image and build id) and the channels that point into it."""

from __future__ import annotations

from toolkit.core.config import Settings
from toolkit.store.artifacts import Store
from toolkit.trust.keys import open_keyring


def open_store(settings: Settings) -> Store:
    """The store of this home (``<home>/store``), signing and checking with the home's keys."""
    return Store(settings.store_dir, open_keyring(settings.home, settings.project, settings.extra.get("trust")))
