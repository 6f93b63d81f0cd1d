"""Text from outside (reports, headers, paths on a node) made safe to print on a terminal. Pure.

A value an agent, a proxy or a drifted file name chose must never move the cursor, retitle the
window or clear the screen of whoever runs ``golden fleet`` or ``golden drift``: every control
character (C0, DEL, C1, and the line and paragraph separators) is shown as a Python escape.
"""

from __future__ import annotations

import re

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(c, f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def printable(value: object) -> str:
    """``value`` as text with every control character escaped (``\\x1b``, ``\\n``...); the rest unchanged."""
    return CONTROL_RE.sub(_escape, str(value))
