"""Where a request ends: one strict reading of a request head's framing, before any handler sees it. Pure.

Request smuggling lives in disagreements about where a body ends. The boot server accepts one
framing only: ``Content-Length`` (the same value if repeated), no ``Transfer-Encoding`` (no golden
client sends chunked bodies), and a body only on ``POST``. Everything else is a 400 before a
byte of the body is read, so leftover bytes can never run as a second request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIGITS_RE = re.compile(r"^[0-9]{1,18}$")


class FramingError(Exception):
    """The head cannot be framed safely; ``status`` is the HTTP answer (400, 413)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Framing:
    """Where one request on a kept-alive connection ends: its method, head and body lengths."""
    method: str
    head_bytes: int  # the head, with its blank line
    body_bytes: int  # what follows it and belongs to this request


def head_end(buf: bytes | bytearray) -> int:
    """The offset just past the head's blank line; -1 while it has not all arrived."""
    crlf, lf = buf.find(b"\r\n\r\n"), buf.find(b"\n\n")
    ends = [i + n for i, n in ((crlf, 4), (lf, 2)) if i >= 0]
    return min(ends) if ends else -1


def _header_values(lines: list[str], name: str) -> list[str]:
    return [v.strip() for k, _, v in (line.partition(":") for line in lines) if k.strip().lower() == name]


def frame_request(buf: bytes | bytearray, max_body: int) -> Framing:
    """The framing of the request whose head starts ``buf``; FramingError when it is ambiguous or too large."""
    end = head_end(buf)
    if end < 0:
        raise FramingError(400, "incomplete request head")
    lines = bytes(buf[:end]).decode("latin-1").splitlines()
    method = lines[0].split(" ", 1)[0] if lines else ""
    if _header_values(lines[1:], "transfer-encoding"):
        raise FramingError(400, "Transfer-Encoding is not accepted (send Content-Length)")
    lengths = set(_header_values(lines[1:], "content-length"))
    if len(lengths) > 1:
        raise FramingError(400, "conflicting Content-Length headers")
    length_s = lengths.pop() if lengths else "0"
    if not DIGITS_RE.match(length_s):
        raise FramingError(400, "Content-Length is not a number")
    length = int(length_s)
    if length and method != "POST":
        raise FramingError(400, f"a {method[:16]} request carries no body")
    if length > max_body:
        raise FramingError(413, f"body of {length} bytes is over the limit of {max_body}")
    return Framing(method, end, length)
