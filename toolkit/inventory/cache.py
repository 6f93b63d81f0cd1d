"""The resolved-inventory cache: one JSON file per set of sources, valid while they are unchanged.

The key is a hash of the sources' paths, the mtimes and sizes of every file under them
(inventory folders, ``group_vars/`` and ``host_vars/`` beside or inside them) and the vault
password sources. A source that is a program (an executable script, a plugin config such as
``netbox.yml`` or ``constructed``) can change without its file changing, so entries holding one
expire after a TTL. Files are written aside and renamed into place, mode 0600; BMC passwords in
them are ciphertext (see ``vault``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import operator
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit.core.fsutil import atomic_write

FORMAT = 4  # 3: BMC rows carry bmc_verify and bmc_ca_file; 4: install mode and disk settings
DYNAMIC_TTL_S = 300.0  # scripts and plugins: how long their answer is trusted
_WALK_LIMIT = 20_000  # files under one source beyond which we stop looking (and expire by TTL instead)
_PLUGIN_MARKER = "plugin:"
_VARS_DIRS = frozenset({"group_vars", "host_vars"})


def _stat(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}\0-\n"
    return f"{path}\0{st.st_mtime_ns}\0{st.st_size}\n"


def _walk(folder: str, out: list[str], vars_dir: bool = False) -> bool:
    """Append every file under ``folder`` (sorted, so the stamp is stable); True if one is a program."""
    dynamic = False
    try:
        entries = sorted(os.scandir(folder), key=operator.attrgetter("name"))
    except OSError:
        return False
    for entry in entries:
        if len(out) > _WALK_LIMIT:
            return True
        if entry.is_dir():
            # vars files are data, never programs: only an inventory folder's own files can be scripts or plugins
            dynamic = _walk(entry.path, out, vars_dir or entry.name in _VARS_DIRS) or dynamic
            continue
        try:
            st = entry.stat()
        except OSError:
            continue
        out.append(f"{entry.path}\0{st.st_mtime_ns}\0{st.st_size}\n")
        dynamic = dynamic or (not vars_dir and is_dynamic(entry.path))
    return dynamic


def is_dynamic(path: str) -> bool:
    """A source whose answer can change while its file does not: a script or an inventory plugin config."""
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return True
    if not path.endswith((".yml", ".yaml")):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return any(line.strip().startswith(_PLUGIN_MARKER.encode()) for line in head.splitlines())


def source_stamp(sources: Sequence[str]) -> tuple[list[str], bool]:
    """Every file that can change the resolved inventory, with its mtime and size; and whether any is dynamic."""
    stamp: list[str] = []
    dynamic = False
    for source in sources:
        if "," in source and not os.path.exists(source):  # a host list like "a,b,": the text is the input
            stamp.append(f"{source}\0hostlist\n")
            continue
        src = os.path.abspath(source)
        stamp.append(_stat(src))
        if os.path.isdir(src):
            dynamic = _walk(src, stamp) or dynamic
        else:
            for d in ("group_vars", "host_vars"):
                dynamic = _walk(os.path.join(os.path.dirname(src), d), stamp, True) or dynamic
            dynamic = dynamic or is_dynamic(src)
    return stamp, dynamic


def inventory_stamp(sources: Sequence[str]) -> str:
    """A short fingerprint that changes when the sources do (and every TTL for scripts and plugins)."""
    stamp, dynamic = source_stamp(sources)
    if dynamic:
        stamp.append(str(int(time.time() // DYNAMIC_TTL_S)))
    return hashlib.sha256("".join(stamp).encode()).hexdigest()


def quick_stamp(sources: Sequence[str]) -> str:
    """The sources' own mtimes and sizes (no walk): one stat a source."""
    return "".join(_stat(os.path.abspath(s)) for s in sources)


def cache_path(cache_dir: Path, sources: Sequence[str]) -> Path:
    """The cache file of the inventory made of ``sources``."""
    ident = hashlib.sha256(json.dumps([os.path.abspath(s) for s in sources]).encode()).hexdigest()[:20]
    return cache_dir / f"inventory-{ident}.json"


def ansible_stamp() -> str:
    """Which ansible-core resolved the inventory, without importing it (or importlib.metadata: 0.1 s)."""
    spec = importlib.util.find_spec("ansible")
    if spec is None or not spec.origin:
        return "none"
    return _stat(os.path.join(os.path.dirname(spec.origin), "release.py"))


def compute_key(sources: Sequence[str], vault_stamp: list[Any], ansible_version: str) -> tuple[str, bool]:
    """The cache key (hash of every input) and whether the entry expires by TTL."""
    stamp, dynamic = source_stamp(sources)
    blob = json.dumps([FORMAT, ansible_version, vault_stamp], sort_keys=True, default=str) + "".join(stamp)
    return hashlib.sha256(blob.encode()).hexdigest(), dynamic


def read(path: Path, key: str) -> dict[str, Any] | None:
    """The cached document for ``key``, or None when missing, stale, expired or unreadable."""
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("key") != key or doc.get("format") != FORMAT:
        return None
    expires = doc.get("expires")
    if expires is not None and time.time() > float(expires):
        return None
    return doc


def write(path: Path, key: str, dynamic: bool, body: dict[str, Any]) -> None:
    """Written aside (0600) and renamed into place: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "key": key, "written": time.time(),
           "expires": time.time() + DYNAMIC_TTL_S if dynamic else None, **body}
    # no fsync: a cache torn by a crash fails to parse and is rebuilt, it is never wrong
    atomic_write(path, json.dumps(doc, separators=(",", ":")), mode=0o600, fsync=False)
