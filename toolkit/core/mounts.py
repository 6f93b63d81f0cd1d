"""The mount table, read one way: which mount points lie at or below a folder."""

from __future__ import annotations

import re
from pathlib import Path

MOUNTS = Path("/proc/mounts")


def unescape(field: str) -> str:
    r"""A mount-table field as the path it names: the kernel writes space, tab, newline and backslash
    as octal escapes (``\040``, ``\011``, ``\012``, ``\134``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(prefix: Path, mounts_file: Path = MOUNTS) -> list[str]:
    """Mount points at or below ``prefix``, deepest first (the order to unmount them in)."""
    pre = str(Path(prefix).resolve()) if Path(prefix).exists() else str(prefix)
    found = []
    for line in mounts_file.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        point = unescape(parts[1])
        if point == pre or point.startswith(pre.rstrip("/") + "/"):
            found.append(point)
    return sorted(found, key=lambda m: m.count("/"), reverse=True)
