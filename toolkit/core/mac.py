"""MAC addresses: the one parser. Every MAC golden stores, compares or renders is normalised here.

``52-54-00-AB-CD-EF``, ``52:54:00:ab:cd:ef`` and ``525400abcdef`` all become ``52:54:00:ab:cd:ef``.
"""

from __future__ import annotations

import re

from toolkit.core.errors import InputError

_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-]?[0-9a-f]{2}){5}$")


class MacError(InputError):
    """A value is not a MAC address."""


def normalize_mac(value: str) -> str:
    """The canonical lower-case, colon-separated form; MacError when ``value`` is not a MAC."""
    if not isinstance(value, str):
        raise MacError(f"not a MAC address: {value!r:.40}")
    m = value.strip().lower()
    if not _MAC_RE.match(m):
        raise MacError(f"not a MAC address: {value[:40]!r}", hint="write it like 52:54:00:12:34:56")
    digits = m.replace(":", "").replace("-", "")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def is_mac(value: str) -> bool:
    """True when ``value`` parses as a MAC address."""
    try:
        normalize_mac(value)
    except MacError:
        return False
    return True
