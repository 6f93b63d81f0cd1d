"""Which stored builds ``golden serve`` may hand out, and where their files are: a build whose signature
does not verify against the trusted keys (``Store.verify``) is served by neither its path
(``/store/<image>/<build-id>/...``) nor its content address (``/a/<sha256>``, what site caches fill from).

Both lookups cache what they checked, with the build's ``stamp`` (its manifest's and signature's inode,
size and mtime): an edit while the server runs is seen on the next request, not at the next restart.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from toolkit.boot.connections import QuietLog
from toolkit.core.errors import GoldenError
from toolkit.store.artifacts import Build, Store

log = logging.getLogger("golden.serve")
_refusals = QuietLog()  # requests for a refused build's files may come in a flood: one line per build at a time
Stamp = tuple[object, ...]


def usable(store: Store, build: Build) -> bool:
    """Whether ``build`` verifies against the trusted keys (toolkit.trust.signing); logs why not."""
    try:
        store.verify(build)
    except GoldenError as exc:
        _refusals.warn(f"{build.image}/{build.build_id}", "golden serve: not serving the files of %s/%s: %s",
                       build.image, build.build_id, exc.message)
        return False
    return True


class BuildCache:
    """(image, build id) -> the stored build, when it verifies; checked again once its stamp changed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._builds: dict[tuple[str, str], tuple[Build, Stamp]] = {}

    def find(self, image: str, build_id: str) -> Build | None:
        key = (image, build_id)
        cached = self._builds.get(key)
        if cached is not None and cached[0].path.is_dir() and cached[0].stamp() == cached[1]:
            return cached[0]
        try:
            build = self.store.find(image, build_id)
        except GoldenError:
            build = None
        stamp = build.stamp() if build is not None else ()
        if build is not None and not usable(self.store, build):
            build = None
        with self._lock:
            if build is None:
                self._builds.pop(key, None)
            else:
                self._builds[key] = (build, stamp)
        return build


class ArtifactIndex:
    """sha256 -> file, from every build's manifest that verifies; rescanned on a miss (at most every few
    seconds) and when the manifest or signature of the build a file came from changed since it was read."""

    RESCAN_SECONDS = 2.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._by_sha: dict[str, tuple[Path, Build, Stamp]] = {}
        self._scanned_at = 0.0

    def _current(self, sha: str) -> Path | None:
        entry = self._by_sha.get(sha)
        if entry is None or not entry[0].is_file() or entry[1].stamp() != entry[2]:
            return None
        return entry[0]

    def lookup(self, sha: str) -> Path | None:
        path = self._current(sha)
        if path is not None:
            return path
        changed = sha in self._by_sha  # its build's manifest or signature changed: read it again now
        with self._lock:
            if changed or time.monotonic() - self._scanned_at >= self.RESCAN_SECONDS:
                self._scan()
        return self._current(sha)

    def _scan(self) -> None:
        found: dict[str, tuple[Path, Build, Stamp]] = {}
        for image in self.store.images():
            try:
                builds = self.store.builds(image)
            except GoldenError as exc:
                log.warning("golden serve: skipping image %s: %s", image, exc)
                continue
            for b in builds:
                stamp = b.stamp()
                if not usable(self.store, b):
                    continue  # a site cache must not fill from a build this server refuses to boot
                for name, art in b.manifest.artifacts.items():
                    found.setdefault(art.sha256, (b.path / name, b, stamp))
        self._by_sha = found
        self._scanned_at = time.monotonic()
