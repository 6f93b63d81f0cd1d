"""One process-wide "stop" request: set by the first SIGTERM or SIGINT, checked between long stages.

The signal itself unwinds the running stage (the CLI turns it into KeyboardInterrupt, so rollback
steps run). A stage can still end in an ordinary error instead (its child died of the same signal,
sent to the whole unit by ``systemctl stop``); a loop over stages asks ``check_stop()`` before the
next one, so no later stage starts after an interrupt whatever the current one made of it.
"""

from __future__ import annotations

import threading

_requested = threading.Event()


def request_stop() -> None:
    _requested.set()


def clear_stop() -> None:
    """A new command starts with no stop requested (a process that runs several, like a test)."""
    _requested.clear()


def stop_requested() -> bool:
    return _requested.is_set()


def check_stop() -> None:
    """Raise KeyboardInterrupt (the interrupt path every verb handles) once a stop was requested."""
    if _requested.is_set():
        raise KeyboardInterrupt
