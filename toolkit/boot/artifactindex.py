"""The boot server's artifact index: which stored file has a given sha256 (``GET /a/<sha256>``).

Built from every build's manifest and rescanned on a miss, at most every few seconds, so a build
committed a moment ago is found without a restart and a flood of unknown hashes costs no rescans.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from toolkit.core.errors import GoldenError
from toolkit.store.artifacts import Store

log = logging.getLogger("golden.serve")


class ArtifactIndex:
    """sha256 -> file, from every build's manifest; rescanned on a miss, at most every few seconds."""

    RESCAN_SECONDS = 2.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._by_sha: dict[str, Path] = {}
        self._scanned_at = 0.0

    def lookup(self, sha: str) -> Path | None:
        """The stored file with this sha256, rescanning the store at most once per RESCAN_SECONDS."""
        path = self._by_sha.get(sha)
        if path is not None and path.is_file():
            return path
        with self._lock:
            if time.monotonic() - self._scanned_at >= self.RESCAN_SECONDS:
                self._scan()
        path = self._by_sha.get(sha)
        return path if path is not None and path.is_file() else None

    def _scan(self) -> None:
        found: dict[str, Path] = {}
        for image in self.store.images():
            try:
                builds = self.store.builds(image)
            except GoldenError as exc:
                log.warning("golden serve: skipping image %s: %s", image, exc)
                continue
            for b in builds:
                for name, art in b.manifest.artifacts.items():
                    found.setdefault(art.sha256, b.path / name)
        self._by_sha = found
        self._scanned_at = time.monotonic()
