"""One nightly at a time per home: an flock on ``<home>/locks/nightly.lock`` naming its holder.

A second ``golden nightly`` is refused at once (exit 1) with the running one's run id, pid and start.
The kernel drops the lock when its holder dies, so a killed nightly never blocks the next night.
A manual ``golden bake`` of the same image meanwhile is kept apart by the store's per-image lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from toolkit.core.errors import LockedError

LOCK_NAME = "nightly.lock"


class NightlyRunningError(LockedError):
    """Another nightly holds the lock."""


def _holder_text(raw: bytes) -> str:
    try:
        h = json.loads(raw.decode())
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(h["started_at"])))
        return f"run {h['run_id']} (pid {h['pid']}, since {since})"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def nightly_lock(locks_dir: Path, run_id: str) -> Iterator[Path]:
    """Hold the home's nightly lock for ``run_id``; NightlyRunningError naming the holder when another nightly runs."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    path = locks_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(os.pread(fd, 4096, 0))
            raise NightlyRunningError(f"another golden nightly is running: {holder}; not starting a second one",
                                      hint="wait for it to finish; 'golden nightly --last' then shows its report"
                                      ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"run_id": run_id, "pid": os.getpid(), "started_at": time.time()}).encode(), 0)
        yield path
    finally:
        os.close(fd)
