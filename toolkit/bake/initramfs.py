"""The initramfs cache: a bake builds an initramfs only when what goes into it changed.

update-initramfs took ~28 s of a role-only rebake and ~30 s of a Packer bake whose roles did not
touch it. Its output is reproducible (SOURCE_DATE_EPOCH, see post-root.d/60-golden-initramfs), so
an initramfs made from the same inputs is the same bytes, and a stored one can stand in for it.

The key of one kernel's initramfs (``initramfs_key``) covers, read from the image's root:
- the kernel version and its modules list (every path and size under ``/lib/modules/<version>``);
- every installed package and its version (``/var/lib/dpkg/status``): the kernel package, and the
  binaries and libraries the hooks copy in (busybox, udev, live-boot, kmod ...);
- the bytes of the initramfs-tools configuration, hooks and scripts (``/etc/initramfs-tools``,
  ``/usr/share/initramfs-tools``), golden's own initramfs scripts (``/usr/share/golden``), the
  modprobe and udev rules configuration, ``/etc/fstab`` and ``/etc/crypttab``;
- the SOURCE_DATE_EPOCH, and KEY_FORMAT.
Not covered: a file outside those folders that belongs to no package and that a hook copies by
its own choice (the hook's bytes are in the key, the file's are not). Bump KEY_FORMAT, or add the
folder to KEY_PATHS, when a hook of ours starts doing that.

Entries live machine-wide in ``<cache>/initramfs/<key>.img`` with a ``<key>.sha256`` beside it,
both written aside and renamed into place; an entry whose bytes do not match its sha256 (a torn
or corrupted file) is removed and the initramfs is built again. Nothing here enters a build id.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from toolkit.bake.plan import canonical_json, sha256_text
from toolkit.core.fsutil import atomic_write, sha256_file

KEY_FORMAT = 1
KEY_LENGTH = 24
KEEP = 8  # entries kept (~40 MB each), least recently used go first
KEY_PATHS = ("etc/initramfs-tools", "usr/share/initramfs-tools", "usr/share/golden", "etc/modprobe.d",
             "lib/modprobe.d", "usr/lib/modprobe.d", "etc/udev/rules.d", "etc/fstab", "etc/crypttab")


def _inside(root: Path, rel: str) -> Path | None:
    """``root/rel`` resolved, or None when missing or outside the root (an absolute symlink)."""
    path = (root / rel).resolve()
    top = root.resolve()
    return path if path.exists() and path.is_relative_to(top) else None


def _walk(base: Path) -> Iterator[Path]:
    if base.is_file():
        yield base
        return
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(filenames + [d for d in dirnames if (here / d).is_symlink()]):
            yield here / name


def _file_entry(root: Path, path: Path) -> list[str]:
    rel = path.relative_to(root).as_posix()
    if path.is_symlink():
        return [rel, "link", os.readlink(path)]
    mode = "x" if os.access(path, os.X_OK) else "-"
    return [rel, mode, hashlib.sha256(path.read_bytes()).hexdigest()]


def _config_entries(root: Path) -> list[list[str]]:
    top = root.resolve()
    seen: set[Path] = set()
    out: list[list[str]] = []
    for rel in KEY_PATHS:
        base = _inside(root, rel)
        if base is None or base in seen:  # /lib is /usr/lib in a merged-/usr root: hash it once
            continue
        seen.add(base)
        out += [_file_entry(top, p) for p in _walk(base)]
    return out


def _modules(root: Path, version: str) -> list[list[str | int]]:
    base = _inside(root, f"lib/modules/{version}")
    if base is None:
        return []
    return [[p.relative_to(base).as_posix(), p.lstat().st_size] for p in _walk(base)]


def installed_packages(root: Path) -> list[str]:
    """``name=version`` of every installed package, from the root's dpkg status file."""
    try:
        text = (root / "var/lib/dpkg/status").read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Status", "").endswith(" installed"):
            out.append(f"{fields.get('Package')}:{fields.get('Architecture', '')}={fields.get('Version')}")
    return sorted(out)


def kernel_versions(root: Path) -> list[str]:
    """The kernels installed in the root (the folders of /lib/modules)."""
    base = _inside(root, "lib/modules")
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base else []


def initramfs_key(root: Path, version: str, epoch: int) -> str:
    """The key of kernel ``version``'s initramfs in ``root`` (see the module docstring)."""
    data = {"format": KEY_FORMAT, "kernel": version, "epoch": epoch, "modules": _modules(root, version),
            "packages": installed_packages(root), "config": _config_entries(root)}
    return sha256_text(canonical_json(data))[:KEY_LENGTH]


@dataclass(frozen=True)
class InitramfsCache:
    """Stored initramfs images by key, in one folder shared by every bake of the machine."""
    dir: Path

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.dir / f"{key}.img", self.dir / f"{key}.sha256"

    def fetch(self, key: str) -> bytes | None:
        """The stored initramfs of ``key``; None when there is none or it is damaged (then removed)."""
        img, digest = self._paths(key)
        try:
            data, want = img.read_bytes(), digest.read_text().strip()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() != want:
            img.unlink(missing_ok=True)
            digest.unlink(missing_ok=True)
            return None
        os.utime(img)  # recently used: pruned last
        return data

    def store(self, key: str, initrd: Path) -> None:
        """Keep ``initrd`` as the initramfs of ``key``: the image first, its sha256 last (a torn
        store has no sha256, so it is never fetched)."""
        img, digest = self._paths(key)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(img, initrd.read_bytes(), fsync=False)
        atomic_write(digest, sha256_file(img) + "\n", fsync=False)

    def prune(self, keep: int = KEEP) -> list[Path]:
        """Remove all but the ``keep`` most recently used entries."""
        if not self.dir.is_dir():
            return []
        imgs = sorted(self.dir.glob("*.img"), key=lambda p: p.stat().st_mtime, reverse=True)
        for img in imgs[keep:]:
            img.unlink(missing_ok=True)
            img.with_suffix(".sha256").unlink(missing_ok=True)
        return imgs[keep:]


def adopt_initramfs(root: Path, epoch: int, cache: InitramfsCache) -> None:
    """Store the initramfs ``root`` already holds under the key of that root, unless one is stored:
    a Packer layer starts from its parent's root, whose initramfs was built (reproducibly, with the
    same snapshot epoch) from exactly that root, so a layer whose roles leave its inputs alone
    reuses it instead of building the same bytes again."""
    for version in kernel_versions(root):
        initrd = root / "boot" / f"initrd.img-{version}"
        key = initramfs_key(root, version, epoch)
        if initrd.is_file() and cache.fetch(key) is None:
            cache.store(key, initrd)


def provide_initramfs(root: Path, epoch: int, cache: InitramfsCache, build: Callable[[], object]) -> str:
    """Put every kernel's initramfs in ``root/boot``: the stored ones when all keys are stored
    ("reused"), else ``build()`` (update-initramfs) and store what it made ("built")."""
    keys = {v: initramfs_key(root, v, epoch) for v in kernel_versions(root)}
    stored = {v: cache.fetch(k) for v, k in keys.items()}
    if keys and all(data is not None for data in stored.values()):
        for version, data in stored.items():
            assert data is not None
            atomic_write(root / "boot" / f"initrd.img-{version}", data, fsync=False)
        return "reused"
    build()
    for version, key in keys.items():
        initrd = root / "boot" / f"initrd.img-{version}"
        if initrd.is_file():
            cache.store(key, initrd)
    cache.prune()
    return "built"

