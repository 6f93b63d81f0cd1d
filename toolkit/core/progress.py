"""Progress of long operations: on a terminal, the current phase and the elapsed time on one
line rewritten in place; in a log (stderr not a terminal: CI, cron, systemd), one line per phase
with the time elapsed when it started, so a nightly log shows where the time went.

Off in --json mode; library code reports progress unconditionally and it is a no-op then.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO


def format_elapsed(seconds: float) -> str:
    """``42s`` or ``3m05s``."""
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Live progress of one operation on stderr: a ticking phase line on a terminal, one line per phase otherwise."""
    def __init__(self, title: str, *, enabled: bool, stream: TextIO | None = None, tick: float = 1.0,
                 lines: bool = False) -> None:
        self.title = title
        self.enabled = enabled
        self.lines = lines and not enabled
        self.stream = stream or sys.stderr
        self.tick = tick
        self.current = "starting"
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._width = 0

    @property
    def elapsed(self) -> float:
        """Seconds since the operation started."""
        return time.monotonic() - self.started

    def phase(self, name: str) -> None:
        """Say the operation is now in phase ``name`` (a repeat of the current phase is ignored)."""
        with self._lock:
            if name == self.current:
                return
            self.current = name
        if self.lines:
            self._say(f"{self.title}: {name} (+{format_elapsed(self.elapsed)})")
        self._draw()

    def _say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _line(self) -> str:
        return f"{self.title}: {self.current}, {format_elapsed(self.elapsed)}"

    def _draw(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            text = self._line()
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            self._draw()

    def __enter__(self) -> Progress:
        self.started = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
            self._draw()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.enabled:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        if self.lines:
            how = "done" if exc_type is None else "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
            self._say(f"{self.title}: {how} after {format_elapsed(self.elapsed)}")
