"""The serial consoles a reimage run captured: ``<runs>/<run>/console/<host>.<attempt>.log``, bounded.

Each file holds the last MAX_CONSOLE_BYTES of what the host's console showed during that attempt
(TailBuffer keeps the end, which is what explains a host that never reported), with golden's own
notes on lines starting ``[golden:`` (capture could not start, the session dropped). Reading a tail
strips terminal control sequences so it can be printed anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.fsutil import atomic_write

CONSOLE_DIR = "console"
MAX_CONSOLE_BYTES = 256 * 1024
TAIL_LINES = 40
_HOST_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_NAME_RE = re.compile(r"^(?P<host>.+)\.(?P<attempt>[0-9]{1,4})\.log$")
# CSI sequences (colours, cursor moves, SeaBIOS's screen clears), other ESC pairs, then lone controls
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[ -/]*[0-~]|[\x00-\x08\x0b-\x1f\x7f]")


class TailBuffer:
    """The last ``limit`` bytes of a stream, and how many were dropped before them. Pure."""

    def __init__(self, limit: int = MAX_CONSOLE_BYTES) -> None:
        if limit < 1:
            raise ValueError("a tail buffer keeps at least one byte")
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        """Append ``chunk``, dropping the oldest bytes beyond the limit."""
        self.data += chunk
        over = len(self.data) - self.limit
        if over > 0:
            del self.data[:over]
            self.dropped += over

    def text(self) -> bytes:
        """What is kept, with a first line saying how much was dropped (if any)."""
        head = f"[golden: {self.dropped} earlier bytes dropped]\n".encode() if self.dropped else b""
        return head + bytes(self.data)


def console_dir(runs_dir: Path, run_id: str) -> Path:
    """Where a run keeps its consoles."""
    return runs_dir / run_id / CONSOLE_DIR


def console_file(directory: Path, host: str, attempt: int) -> Path:
    """The file of one host's console during one attempt; ValueError for a name unfit for a file."""
    if not _HOST_RE.match(host) or host in (".", ".."):
        raise ValueError(f"host name {host!r} cannot name a console file")
    return directory / f"{host}.{attempt}.log"


def save_tail(path: Path, buffer: TailBuffer) -> None:
    """Write the buffer's text to ``path`` whole (a reader never sees half a write)."""
    atomic_write(path, buffer.text(), fsync=False)


@dataclass(frozen=True)
class ConsoleTail:
    """The end of one host's console as a run captured it."""
    host: str
    attempt: int
    path: str
    lines: tuple[str, ...]


def printable_tail(raw: bytes, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` non-empty lines of console bytes, without terminal control sequences. Pure."""
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    kept = [line.rstrip() for line in _ANSI.sub("", text).split("\n")]
    return [line for line in kept if line.strip()][-lines:] if lines > 0 else []


def console_tail(runs_dir: Path, run_id: str, host: str, lines: int = TAIL_LINES) -> ConsoleTail | None:
    """The newest attempt's console of ``host`` in run ``run_id`` (None: nothing was captured)."""
    found = []
    directory = console_dir(runs_dir, run_id)
    for p in directory.glob("*.log") if directory.is_dir() else ():
        m = _NAME_RE.match(p.name)
        if m and m["host"] == host:
            found.append((int(m["attempt"]), p))
    if not found:
        return None
    attempt, path = max(found)
    return ConsoleTail(host, attempt, str(path), tuple(printable_tail(path.read_bytes(), lines)))
