"""Where each installed package came from: the archive (suite) apt installed its version from.

Read at bake time from the image's own apt data, before DIB's cleanup empties the lists: every
``/var/lib/apt/lists/*_Packages`` index names its suite in the file name (``..._dists_bookworm-security_
main_binary-amd64_Packages``), and ``/var/lib/dpkg/status`` holds what is installed. A version found
in several suites counts as the security suite's first (that is what "is it security?" asks), then
an updates suite, then the release itself. Pure apart from reading files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

_SUITE_RE = re.compile(r"_dists_([A-Za-z0-9.+-]+)_[A-Za-z0-9.+-]+_binary-[A-Za-z0-9]+_Packages$")
LOCAL = "local"  # installed from no index apt knows (a .deb copied in, a package built in the image)


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """The fields of each deb822 paragraph (continuation lines are dropped: we need only one-line fields)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if fields:
        yield fields


def installed(status_text: str) -> dict[str, str]:
    """package -> version of everything dpkg says is installed."""
    return {s["Package"]: s["Version"] for s in stanzas(status_text)
            if s.get("Status", "").endswith(" installed") and "Package" in s and "Version" in s}


def suite_of(list_name: str) -> str | None:
    """The suite an apt list file belongs to, or None."""
    m = _SUITE_RE.search(list_name)
    return m.group(1) if m else None


def _rank(suite: str) -> int:
    return 0 if suite.endswith("-security") else 1 if suite.endswith("-updates") else 2


def origins(installed_versions: dict[str, str], indexes: dict[str, str]) -> dict[str, str]:
    """package -> suite its installed version is offered by; ``indexes`` maps a list file name to its text."""
    found: dict[str, str] = {}
    for name, text in sorted(indexes.items()):
        suite = suite_of(name)
        if suite is None:
            continue
        for s in stanzas(text):
            pkg = s.get("Package", "")
            if installed_versions.get(pkg) == s.get("Version") and (pkg not in found or
                                                                    _rank(suite) < _rank(found[pkg])):
                found[pkg] = suite
    return {pkg: found.get(pkg, LOCAL) for pkg in sorted(installed_versions)}


def read_origins(root: Path) -> dict[str, str]:
    """The origins of the packages installed in the image root ``root``."""
    status = (root / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    lists = root / "var/lib/apt/lists"
    indexes = {p.name: p.read_text(encoding="utf-8", errors="replace")
               for p in sorted(lists.glob("*_Packages")) if p.is_file()} if lists.is_dir() else {}
    return origins(installed(status), indexes)
