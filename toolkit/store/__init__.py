"""The artifact store (immutable builds by image and build id) and the channels that point into it."""

from __future__ import annotations

from toolkit.core.config import Settings
from toolkit.store.artifacts import Store


def open_store(settings: Settings) -> Store:
    """The store of this home (``<home>/store``)."""
    return Store(settings.store_dir)
