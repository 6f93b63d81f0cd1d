"""Terminal progress for long operations: the current phase and the elapsed time on one line.

Only shown when stderr is a terminal and not in --json mode; otherwise every call is a no-op,
so library code can report progress unconditionally.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO


def format_elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, title: str, *, enabled: bool, stream: TextIO | None = None, tick: float = 1.0) -> None:
        self.title = title
        self.enabled = enabled
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
        return time.monotonic() - self.started

    def phase(self, name: str) -> None:
        with self._lock:
            if name == self.current:
                return
            self.current = name
        self._draw()

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
