"""How golden's log lines look on stderr: a level on every line; under systemd, journald's way.

Run by systemd with stderr going to the journal (``JOURNAL_STREAM`` names that stream), every line
starts with its syslog priority (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug) and
carries no timestamp of its own: journald adds one, and reads the priority from the prefix
(sd-daemon(3)). Anywhere else a line is ``2026-12-07T03:00:00Z WARNING golden.serve: text`` (UTC),
without the timestamp at the default level, where only warnings and errors are shown.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
# libraries whose debug output is their own business, not an operator's (pyghmi's vendor plugins)
QUIET_LIBRARIES = ("pyghmi", "urllib3", "asyncio")


def priority_of(level: int) -> int:
    return next((p for lv, p in sorted(PRIORITY.items(), reverse=True) if level >= lv), 7)


def journal_stream(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (JOURNAL_STREAM is ``dev:inode``)."""
    named = os.environ.get("JOURNAL_STREAM", "")
    if not named:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return named == f"{st.st_dev}:{st.st_ino}"


def prefixed(text: str, level: int, journal: bool) -> str:
    """``text`` for stderr: under journald each of its lines carries the priority prefix."""
    if not journal:
        return text
    return "\n".join(f"<{priority_of(level)}>{line}" for line in text.split("\n"))


class LineFormatter(logging.Formatter):
    def __init__(self, journal: bool, timestamps: bool) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        super().__init__(fmt if journal or not timestamps else "%(asctime)s " + fmt, datefmt="%Y-%m-%dT%H:%M:%SZ")
        self.converter = time.gmtime
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        return prefixed(super().format(record), record.levelno, self.journal)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a test's capture may have replaced it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup_logging(level: int, stream: TextIO | None = None) -> None:
    """golden's one stderr handler at ``level``; chatty libraries stay at warnings even with -vv. Like
    ``logging.basicConfig``, it leaves a program that set up logging itself (pytest, an embedding
    service) alone, unless given a stream; a handler golden set up before is replaced."""
    root = logging.getLogger()
    if stream is None and any(not getattr(h, "golden", False) for h in root.handlers):
        return
    handler: logging.StreamHandler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(LineFormatter(journal_stream(stream or sys.stderr), timestamps=level < logging.WARNING))
    handler.golden = True  # type: ignore[attr-defined]
    for old in [h for h in root.handlers if getattr(h, "golden", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # psycopg's pool warns on every failed reconnect while PostgreSQL is away; golden says once that the
    # state database is unreachable and once that it is back (state.postgres), so those show only with -vv
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING if level <= logging.DEBUG else logging.ERROR)


def stderr_line(text: str, level: int = logging.INFO) -> None:
    """A line that is no log record (an error message, a progress line) written to stderr, with the
    journal's priority prefix when stderr is the journal."""
    print(prefixed(text, level, journal_stream(sys.stderr)), file=sys.stderr, flush=True)
