"""Atomic file writes: the one way golden puts a file in place.

A reader sees the old file or the whole new one, never half of it: the bytes go to a uniquely
named temporary file in the same folder (created 0600-safe with O_EXCL, then given its mode),
are flushed to disk, and are renamed over the target. ``exclusive=True`` creates the file only
if it does not exist yet (link(2) instead of rename), so racing writers all end up reading the
winner's bytes.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write(path: Path, data: str | bytes, *, mode: int = 0o644, exclusive: bool = False,
                 fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically; FileExistsError when ``exclusive`` and it already exists."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
