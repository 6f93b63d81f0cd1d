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
import json
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMAT = 1
DYNAMIC_TTL_S = 300.0  # scripts and plugins: how long their answer is trusted
_WALK_LIMIT = 20_000  # files under one source beyond which we stop looking (and expire by TTL instead)
_PLUGIN_MARKER = "plugin:"


def _stat(path: str) -> list[Any]:
    try:
        st = os.stat(path)
    except OSError:
        return [path, None, None]
    return [path, st.st_mtime_ns, st.st_size]


def _walk(folder: str) -> tuple[list[list[Any]], bool]:
    out: list[list[Any]] = []
    dynamic = False
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            out.append(_stat(path))
            dynamic = dynamic or is_dynamic(path)
            if len(out) > _WALK_LIMIT:
                return out, True
    return out, dynamic


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


def source_stamp(sources: Sequence[str]) -> tuple[list[Any], bool]:
    """Every file that can change the resolved inventory, with its mtime and size; and whether any is dynamic."""
    stamp: list[Any] = []
    dynamic = False
    for source in sources:
        if "," in source and not os.path.exists(source):  # a host list like "a,b,": the text is the input
            stamp.append([source, "hostlist"])
            continue
        src = os.path.abspath(source)
        stamp.append(_stat(src))
        folders = [src] if os.path.isdir(src) else []
        folders += [os.path.join(os.path.dirname(src), d) for d in ("group_vars", "host_vars")]
        for folder in folders:
            if os.path.isdir(folder):
                files, dyn = _walk(folder)
                stamp.extend(files)
                dynamic = dynamic or dyn
        if os.path.isfile(src) and is_dynamic(src):
            dynamic = True
    return stamp, dynamic


def inventory_stamp(sources: Sequence[str]) -> str:
    """A short fingerprint that changes when the sources do (and every TTL for scripts and plugins)."""
    stamp, dynamic = source_stamp(sources)
    if dynamic:
        stamp.append(int(time.time() // DYNAMIC_TTL_S))
    return hashlib.sha256(json.dumps(stamp, default=str).encode()).hexdigest()


def cache_path(cache_dir: Path, sources: Sequence[str]) -> Path:
    ident = hashlib.sha256(json.dumps([os.path.abspath(s) for s in sources]).encode()).hexdigest()[:20]
    return cache_dir / f"inventory-{ident}.json"


def compute_key(sources: Sequence[str], vault_stamp: list[Any], ansible_version: str) -> tuple[str, bool]:
    """The cache key (hash of every input) and whether the entry expires by TTL."""
    stamp, dynamic = source_stamp(sources)
    blob = json.dumps([FORMAT, ansible_version, stamp, vault_stamp], sort_keys=True, default=str)
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
    """Write aside (0600) and rename into place: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "key": key, "written": time.time(),
           "expires": time.time() + DYNAMIC_TTL_S if dynamic else None, **body}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
