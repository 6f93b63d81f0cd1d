"""Limits on what an inventory may ask of us, checked before Ansible expands or loads it. Pure, apart from reading.

- A host range (``web[0:99]``, ``node[a:f]``, ``rack[01:40:2]``) names at most ``MAX_RANGE_HOSTS``
  hosts: Ansible would otherwise expand ``web[0:99999999]`` into gigabytes of host objects before
  saying anything.
- A host name is printable, one word: a name with a newline or an escape sequence would end up in
  boot events, logs and terminals.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from toolkit.core.errors import InputError
from toolkit.core.text import printable

MAX_RANGE_HOSTS = 100_000
MAX_SCANNED_BYTES = 16 << 20
RANGE_RE = re.compile(r"\[([0-9]+|[a-zA-Z]):([0-9]+|[a-zA-Z])(?::([0-9]+))?\]")
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\[\]@-]{0,252}$")
VARS_FOLDERS = {"group_vars", "host_vars"}


def range_size(m: re.Match[str]) -> int:
    """How many names one ``[start:end(:step)]`` expands to (0 when it expands to nothing)."""
    start, end, step = m.group(1), m.group(2), int(m.group(3) or 1)
    if start.isdigit() != end.isdigit():
        return 0
    a, b = (int(start), int(end)) if start.isdigit() else (ord(start), ord(end))
    return 0 if step < 1 or b < a else (b - a) // step + 1


def check_ranges(text: str, where: str) -> None:
    """InputError naming the line of the first host pattern that expands past MAX_RANGE_HOSTS."""
    for number, line in enumerate(text.splitlines(), 1):
        total = 1
        for m in RANGE_RE.finditer(line):
            total *= max(range_size(m), 1)
        if total > MAX_RANGE_HOSTS:
            raise InputError(f"{where}:{number}: a host range of {total:,} hosts; at most {MAX_RANGE_HOSTS:,} "
                             "per pattern", hint="split it, or list the hosts another way (an inventory plugin)")


def _inventory_files(source: Path) -> Iterator[Path]:
    if source.is_file():
        yield source
        return
    for folder, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d not in VARS_FOLDERS and not d.startswith(".")]
        yield from (Path(folder) / f for f in files)


def check_sources(sources: Sequence[str]) -> None:
    """Every range in the static inventory files of ``sources`` within the limit (scripts are not read)."""
    for source in sources:
        for path in _inventory_files(Path(source)):
            try:
                if os.access(path, os.X_OK) or path.stat().st_size > MAX_SCANNED_BYTES:
                    continue
                text = path.read_text(errors="replace")
            except OSError:
                continue  # unreadable: Ansible says so in its own words
            check_ranges(text, str(path))


def check_host_name(name: str, where: str = "inventory") -> str:
    if not HOST_NAME_RE.match(name):
        raise InputError(f"{where}: host name '{printable(name)[:80]}' is not a host name "
                         "(letters, digits, '.', '_', '-', ':' for IPv6)",
                         hint="rename the host; put the address in ansible_host if it needs other characters")
    return name
