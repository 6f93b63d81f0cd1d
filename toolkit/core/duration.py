"""Durations as people write them (``90s``, ``30m``, ``1h``, ``14d``, ``2w``): the one parser for config and CLI.

A bare number is seconds (``90`` = ``90s``), on every option and every golden.yaml key alike.
"""

from __future__ import annotations

import re

from toolkit.core.errors import InputError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RE = re.compile(r"([0-9]{1,7}(?:\.[0-9]{1,6})?)([smhdw]?)")
SHAPE = "a duration like 90s, 15m, 2h or 14d (a bare number is seconds)"


def parse_duration(text: object, what: str = "duration", lo: float = 1.0, hi: float = 366 * 86400.0) -> float:
    """Seconds; InputError naming ``what`` unless ``text`` is a duration (see above) within ``lo..hi`` s."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = f"{text:g}" if text >= 0 else "-"  # a YAML number: seconds, as on the command line
    m = _RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        shown = repr(text)[:40]
        raise InputError(f"{what} must be {SHAPE}, got {shown}")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not lo <= seconds <= hi:
        raise InputError(f"{what} must be between {format_duration(lo)} and {format_duration(hi)}, got {text}")
    return seconds


def format_duration(seconds: float) -> str:
    """The largest whole unit that fits: 1209600 -> 14d, 5400 -> 90m."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"
