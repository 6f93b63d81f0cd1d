"""The content-addressed image store: ``<store>/<image>/<build-id>/``.

A build is assembled in a staging folder inside the store (same filesystem) and appears under
its id only by ``rename``, so readers never see half a build. A lock per image keeps two bakes
of the same image apart; bakes of different images share nothing here but the root folder.

When the home has a signing key, ``commit`` signs the manifest in the staging folder before the
rename, so a build appears with its signature or not at all; ``verify`` is the check every consumer
of a build runs (toolkit.trust.signing says what is refused).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from toolkit.core.errors import LockedError, StoreError
from toolkit.core.fsutil import atomic_write
from toolkit.core.mounts import mounts_under
from toolkit.image.manifest import Manifest, read_manifest
from toolkit.trust.keys import KeyFileError, Keyring
from toolkit.trust.signing import SIGNATURE, SignedBuild, check_artifacts, sign_build, sign_folder, verify_build

ARTIFACTS = ("vmlinuz", "initrd", "rootfs.squashfs")
MANIFEST = "manifest.json"
STAGING = ".staging"
LOCKS = ".locks"
SNAPSHOT = ".package-snapshot"


@dataclass(frozen=True)
class Build:
    """A stored build: its image, id, folder and manifest."""
    image: str
    build_id: str
    path: Path
    manifest: Manifest

    def artifact(self, name: str) -> Path:
        """The path of artifact ``name``; StoreError when the build has none."""
        if name not in self.manifest.artifacts:
            known = ", ".join(sorted(self.manifest.artifacts)) or "none"
            raise StoreError(f"build {self.image}/{self.build_id} has no artifact {name!r} (it has: {known})")
        return self.path / name

    def stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        """What changes when the manifest or its signature is edited or replaced: a reader that checked the
        build once (golden serve) checks it again when this differs."""
        out: list[tuple[int, int, int] | None] = []
        for name in (MANIFEST, SIGNATURE):
            try:
                st = (self.path / name).stat()
            except FileNotFoundError:
                out.append(None)
                continue
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    @property
    def logs(self) -> Path:
        """The bake logs kept with the build."""
        return self.path / "logs"


class Store:
    """The build store: ``<root>/<image>/<build-id>/``, written once through a staging folder and a rename."""
    def __init__(self, root: Path, keyring: Keyring | None = None) -> None:
        self.root = Path(root)
        self.keyring = keyring  # None: nothing signed, nothing checked (tests, tools outside a home)

    # -- reading ------------------------------------------------------------------------------

    def images(self) -> list[str]:
        """The images that have a folder in the store."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def builds(self, image: str) -> list[Build]:
        """Every committed build of ``image``, newest first."""
        folder = self.root / image
        if not folder.is_dir():
            return []
        found = [self._load(image, p) for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(found, key=lambda b: (b.manifest.created_at, b.build_id), reverse=True)

    def find(self, image: str, build_id: str) -> Build | None:
        """The build, or None when it is not stored."""
        path = self.root / image / build_id
        return self._load(image, path) if (path / MANIFEST).is_file() else None

    def get(self, image: str, build_id: str) -> Build:
        """The build; StoreError naming a few stored ones when it is not there."""
        build = self.find(image, build_id)
        if build is None:
            known = ", ".join(b.build_id for b in self.builds(image)[:5]) or "none"
            raise StoreError(f"no build {image}/{build_id} in {self.root} (newest: {known})",
                             hint=f"run: golden bake {image}")
        return build

    def verify(self, build: Build, *, allow_unsigned: bool = False, artifacts: bool = False) -> str | None:
        """The trusted key id that signed ``build`` (None: unsigned and allowed, or no keys here);
        SignatureError when it may not be used. ``artifacts`` also hashes every artifact against the manifest."""
        kid = verify_build(build, self.keyring, allow_unsigned=allow_unsigned)
        if artifacts:
            check_artifacts(build)
        return kid

    def preflight(self) -> None:
        """KeyFileError now, not after a bake, when this home signs and its signing key is unusable."""
        if self.keyring is not None and self.keyring.signs:
            self.keyring.signing_key()

    def unsigned(self) -> list[Build]:
        """Every stored build without a signature (golden serve refuses them once the home trusts keys)."""
        return [b for image in self.images() for b in self.builds(image) if not (b.path / SIGNATURE).exists()]

    def sign_builds(self, images: list[str]) -> list[SignedBuild]:
        """``golden keys sign-builds``: sign every unsigned build of ``images`` (all images when empty),
        each after its artifacts are checked against its manifest."""
        if self.keyring is None or not self.keyring.signs:
            raise KeyFileError("this home has no signing key", hint="run: golden keys init")
        self.keyring.signing_key()  # an unusable key is refused even when there is nothing to sign
        return [sign_build(b, self.keyring) for image in images or self.images() for b in self.builds(image)]

    def _load(self, image: str, path: Path) -> Build:
        manifest = read_manifest(path / MANIFEST)
        if manifest.build_id != path.name or manifest.image != image:
            raise StoreError(f"{path}: manifest names {manifest.image}/{manifest.build_id}, not {image}/{path.name}")
        return Build(image=image, build_id=path.name, path=path, manifest=manifest)

    # -- writing ------------------------------------------------------------------------------

    def stage(self, image: str, tag: str | None = None) -> Path:
        """A fresh staging folder on the store's filesystem, for one bake of ``image``."""
        base = self.root / STAGING
        base.mkdir(parents=True, exist_ok=True)
        path = base / f"{image}.{tag or uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def stale_staging(self, image: str) -> list[Path]:
        """Staging folders of ``image`` left by bakes that were killed (call while holding its lock)."""
        base = self.root / STAGING
        return sorted(base.glob(f"{image}.*")) if base.is_dir() else []

    def commit(self, image: str, build_id: str, staged: Path) -> Build:
        """Rename a finished staging folder into place. Builds are immutable: an existing id is never replaced."""
        manifest = read_manifest(staged / MANIFEST)
        if manifest.build_id != build_id or manifest.image != image:
            raise StoreError(f"{staged}: manifest names {manifest.image}/{manifest.build_id}, not {image}/{build_id}")
        for name in manifest.artifacts:
            if not (staged / name).is_file():
                raise StoreError(f"{staged}: artifact {name} listed in the manifest is missing")
        if self.keyring is not None and self.keyring.signs:
            sign_folder(staged, self.keyring)  # before the rename: the build appears signed or not at all
        target = self.root / image / build_id
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise StoreError(f"build {image}/{build_id} is already stored, and stored builds never change",
                             hint="bake with --force (a new build id for the same inputs) or --refresh")
        try:
            staged.rename(target)  # rename(2) never replaces a non-empty folder: a racing commit fails here
        except OSError as exc:
            raise StoreError(f"cannot store build {image}/{build_id}: {exc.strerror}") from None
        _fsync_dir(target.parent)
        return self._load(image, target)

    def discard(self, staged: Path) -> None:
        """Delete a staging folder; refuses while anything is mounted inside it (rmtree would follow
        a bind mount of /dev or of a shared cache and empty it)."""
        left = mounts_under(staged)
        if left:
            raise StoreError(f"{staged}: still has {len(left)} mount(s) inside, first {left[0]}; not deleting it",
                             hint="unmount them (umount -R) and run the command again")
        shutil.rmtree(staged, ignore_errors=True)

    def delete(self, image: str, build_id: str) -> None:
        """Remove a build: renamed out of sight first, so a reader never finds half a build."""
        path = self.root / image / build_id
        aside = self.root / STAGING / f"{image}.gc-{build_id}-{uuid.uuid4().hex[:6]}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        path.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)

    # -- package snapshot stamp ---------------------------------------------------------------

    def snapshot(self, image: str) -> str | None:
        """The image's package snapshot stamp, or None before its first bake."""
        path = self.root / image / SNAPSHOT
        return path.read_text().strip() if path.is_file() else None

    def set_snapshot(self, image: str, stamp: str) -> None:
        """Record the image's package snapshot stamp."""
        path = self.root / image / SNAPSHOT
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, stamp + "\n")

    # -- locking ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, image: str, what: str = "bake") -> Iterator[Path]:
        """Hold the lock of ``image`` (non-blocking: a second bake of the same image fails at once)."""
        folder = self.root / LOCKS
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{image}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise LockedError(
                    f"image {image!r} is locked by {holder}",
                    hint="wait for that command to finish; bakes of other images may run meanwhile",
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{what} pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}\n".encode(), 0)
            yield path
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
