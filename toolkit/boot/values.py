"""Values a request or an option carries, parsed strictly: ``Range`` headers and ``--listen`` addresses. Pure."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import parse_qs, urlsplit

from toolkit.core.errors import InputError

TOKEN_QUERY_RE = re.compile(r"(?<=[?&]token=)[^&\s]+")
RANGE_RE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")  # 18 digits: any real offset, never a huge int


def parse_range(header: str, size: int) -> tuple[int, int, bool] | None:
    """A ``Range`` header as (start, length, partial); None when unsatisfiable (416).

    Multiple ranges and headers we do not understand are answered with the whole file, which
    RFC 9110 allows and which is what a boot client expects anyway.
    """
    m = RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return (0, size, False)
    if not m.group(1):  # suffix: the last N bytes
        n = min(int(m.group(2)), size)
        return (size - n, n, True) if n > 0 else None
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if m.group(2) and end < start:
        return (0, size, False)  # syntactically invalid: ignore the header
    if start >= size:
        return None
    end = min(end, size - 1)
    return (start, end - start + 1, True)


LISTEN_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$")


def _listen_host(host: str) -> str | None:
    """The address part of --listen (``[v6]``, v4 or a host name), or None when it is none of them."""
    bracketed = host.startswith("[") and host.endswith("]")
    inner = host[1:-1] if bracketed else host
    try:
        ip = ipaddress.ip_address(inner)
    except ValueError:
        return inner if not bracketed and LISTEN_HOST_RE.match(inner) else None
    return str(ip) if bracketed == (ip.version == 6) else None


def parse_listen(value: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6]:PORT``, ``:PORT`` (all addresses) or ``PORT`` (127.0.0.1); InputError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    addr = _listen_host(host) if host else "0.0.0.0"  # noqa: S104 - an explicit ":PORT" means all addresses
    if addr is None or not port.isdigit() or len(port) > 5 or not 0 <= int(port) <= 65535:
        raise InputError(f"--listen must be ADDR:PORT (e.g. 127.0.0.1:9090 or [::1]:9090), got {value!a}")
    return (addr, int(port))


def query_of(target: str) -> dict[str, str]:
    """The query parameters of a request target (``/path?a=1&b=2``), the first value of each."""
    return {k: v[0] for k, v in parse_qs(urlsplit(target).query).items() if v}


def redact_tokens(text: str) -> str:
    """``text`` (a request line) with every ``token=`` query value shown as ``***``: access logs keep no token."""
    return TOKEN_QUERY_RE.sub("***", text)
