"""Debian version comparison (``[epoch:]upstream[-revision]``), as ``dpkg --compare-versions`` does it.

Written out here rather than calling dpkg per package (a diff compares hundreds) or depending on
python-apt (not on PyPI); the test suite checks it against dpkg itself.
"""

from __future__ import annotations

import re

_VERSION_RE = re.compile(r"^(?:(\d+):)?([A-Za-z0-9.+~:-]+?)(?:-([A-Za-z0-9.+~]+))?$")


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternate non-digit and digit runs; ``~`` sorts before everything, even the end."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i, j = i + 1, j + 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def split_version(v: str) -> tuple[int, str, str]:
    """A Debian version as (epoch, upstream, revision)."""
    m = _VERSION_RE.match(v.strip())
    if not m:
        raise ValueError(f"not a Debian version: {v!r}")
    return int(m.group(1) or 0), m.group(2), m.group(3) or ""


def compare_versions(a: str, b: str) -> int:
    """<0, 0 or >0 as ``a`` is older than, equal to or newer than ``b``."""
    ea, ua, ra = split_version(a)
    eb, ub, rb = split_version(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)
