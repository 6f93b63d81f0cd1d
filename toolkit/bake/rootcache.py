"""The pre-role root cache: an image's root as it was right before its roles ran, kept by key.

A full bake captures it (``post-root.d/49-golden-capture-root``, just before ``50-golden-roles``)
into ``<cache>/pre-role/<key>.tar.zst``. A later bake whose pre-role key matches starts from it:
DIB runs the same command line with the same element names, but from shadow copies of those
elements whose pre-role phases are dropped and whose ``root.d`` restores the tarball. The roles,
the initramfs, the bake checks, DIB's finalise and cleanup phases, its image and our squashfs all
still run as in a full bake.

The key covers everything DIB is given before the roles run: its arguments (architecture,
elements, packages), its ``DIB_*`` environment (release, mirrors, apt sources, the spec's
``dib_env``), the bytes of our and the project's elements, the DIB version, the bake recipe and the
package snapshot stamp. It never enters the build id: a bake from the cache and a full bake of the
same inputs get the same id.

Everything here but ``RootCache`` (which reads and prunes the cache folder) and
``shadow_elements`` (which writes the shadow copies) is pure.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.bake.dib import DibInvocation
from toolkit.bake.plan import BakePlan, canonical_json, sha256_text
from toolkit.core.errors import BakeError

# Bump when what a capture holds or how it is restored changes: old captures stop matching.
ROOT_CACHE_FORMAT = 1
KEY_LENGTH = 16
KEEP = 4  # cached roots kept on the machine (~300 MB each), least recently used go first
STALE_TEMP_S = 2 * 3600.0  # a capture temp file this old was left by a killed bake

CAPTURE_HOOK = "49-golden-capture-root"  # post-root.d; sorts right before 50-golden-roles
RESTORE_HOOK = "01-golden-restore-root"  # root.d; a no-op unless GOLDEN_ROOT_RESTORE is set

# disk-image-create adds DIB's "base" element to every build (unless given -n, which we never pass).
IMPLICIT_ELEMENTS = ("base",)

# DIB phases that run before the roles; their effects are all in the captured root.
PRE_ROLE_PHASES = ("root.d", "extra-data.d", "pre-install.d", "install.d", "post-install.d")
# root.d hooks that only mount a build cache into the root (the capture is taken from under the
# mount): they must run again so the roles see the same mounts. And our restore itself.
KEEP_IN_ROOT_D = frozenset({"50-shared-apt-cache", RESTORE_HOOK})

# DIB_* variables that differ between two bakes of the same inputs without changing the pre-role
# root: per-bake paths, the build id (which depends on the roles) and whether debootstrap started
# from its cached tarball.
PER_BAKE_ENV = frozenset({"DIB_IMAGE_CACHE", "DIB_GOLDEN_BUILD_ID", "DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE"})

_TAR_OPTS = ("--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls")
# DIB's create_base moved the image's resolv.conf to resolv.conf.ORIG and put the build host's in
# its place. The capture stores the image's own under its first name, so the same create_base step
# on restore leaves the root exactly as a full bake has it at this point.
_RESOLV_EXCLUDE = "--exclude=./etc/resolv.conf"
_RESOLV_TRANSFORM = r"--transform=s,^\./etc/resolv\.conf\.ORIG$,./etc/resolv.conf,S"


def _argv_without_output(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv[1:]:  # argv[0] is the path of disk-image-create, i.e. of the virtualenv
        if skip:
            skip = False
            continue
        if arg == "-o":
            skip = True
            continue
        out.append(arg)
    return out


def pre_role_key(plan: BakePlan, inv: DibInvocation) -> str:
    """The key of the root a bake has right before its roles run (see the module docstring)."""
    data = {
        "format": ROOT_CACHE_FORMAT,
        "argv": _argv_without_output(inv.argv),
        "dib_env": {k: v for k, v in inv.dib_env.items() if k not in PER_BAKE_ENV},
        "elements": dict(plan.inputs.elements),
        "dib_version": plan.inputs.dib_version,
        "recipe": plan.inputs.recipe,
        "snapshot": plan.inputs.snapshot,
    }
    return sha256_text(canonical_json(data))[:KEY_LENGTH]


def _hook_order(name: str) -> tuple[int, str]:
    # dib-run-parts runs a phase's hooks in ``LANG=C sort -n`` order: by leading number, then bytes.
    m = re.match(r"\d+", name)
    return (int(m.group()) if m else 0, name)


def kept_hooks(phase: str, names: Iterable[str]) -> list[str]:
    """The hooks of ``phase`` a bake from a cached root still runs (for one element's folder)."""
    names = sorted(names)
    if phase == "root.d":
        return [n for n in names if n in KEEP_IN_ROOT_D]
    if phase in PRE_ROLE_PHASES:
        return []
    if phase == "post-root.d":
        return [n for n in names if _hook_order(n) > _hook_order(CAPTURE_HOOK)]
    return names


def _dib_elements_dir() -> Path:
    import diskimage_builder

    return Path(diskimage_builder.__file__).resolve().parent / "elements"


def shadow_elements(elements: Sequence[str], elements_path: Sequence[Path], dest: Path) -> Path:
    """Copy every element ``elements`` expand to (dependencies included, DIB's own too) into
    ``dest``, keeping of the pre-role phases only what ``kept_hooks`` keeps. Put first on
    ELEMENTS_PATH, the copies override the originals under the same names."""
    from diskimage_builder.element_dependencies import get_elements

    search = ":".join([*(str(p) for p in elements_path), str(_dib_elements_dir())])
    dest.mkdir(parents=True)
    try:
        found = get_elements([*IMPLICIT_ELEMENTS, *elements], paths=search)
    except Exception as exc:  # DIB raises bare Exception subclasses; a full bake would fail alike
        raise BakeError(f"DIB cannot resolve the elements {' '.join(elements)}: {exc}",
                        hint="check the spec's elements and the project's elements/ folder") from None
    for name, path in found:
        root = Path(path)

        def ignore(dirpath: str, names: list[str], root: Path = root) -> set[str]:
            here = Path(dirpath)
            if here == root:
                return {n for n in names if n in PRE_ROLE_PHASES and n != "root.d"} | {"tests", "__pycache__"}
            if here.parent == root and here.name in ("root.d", "post-root.d"):
                return set(names) - set(kept_hooks(here.name, names))
            return set()

        # Symlinks are followed, as DIB does when it gathers hooks.
        shutil.copytree(root, dest / name, ignore=ignore, symlinks=False, ignore_dangling_symlinks=True)
    return dest


def capture_command(target: Path, mountpoint: Path, dest: Path) -> list[str]:
    """Archive ``target`` through a non-recursive bind mount in a private mount namespace: the
    archive holds what lies under /proc, /dev, /sys and the apt cache mount (as the image gets it
    once DIB unmounts them), and the bind mount dies with the command, whatever happens to it."""
    tar = ["-C", str(mountpoint), *_TAR_OPTS, _RESOLV_EXCLUDE, _RESOLV_TRANSFORM,
           "-I", "zstd -1 -T0", "-cf", str(dest), "."]
    script = 'src=$1; mnt=$2; shift 2; mount --bind "$src" "$mnt" && exec tar "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "golden-capture",
            str(target), str(mountpoint), *tar]


def restore_command(tarball: Path, target: Path) -> list[str]:
    """The tar command that unpacks a cached root into ``target``."""
    return ["tar", "-C", str(target), *_TAR_OPTS, "-p", "-I", "zstd", "-xf", str(tarball)]


def from_cache(inv: DibInvocation, shadow: Path, tarball: Path) -> DibInvocation:
    """The same DIB command, run from the shadow elements with the cached root restored."""
    host = {**inv.host_env, "ELEMENTS_PATH": str(shadow), "GOLDEN_ROOT_RESTORE": str(tarball)}
    return dataclasses.replace(inv, host_env=host)


def capturing(inv: DibInvocation, dest: Path) -> DibInvocation:
    """The same DIB command, capturing the pre-role root to ``dest`` on the way."""
    return dataclasses.replace(inv, host_env={**inv.host_env, "GOLDEN_ROOT_CAPTURE": str(dest)})


@dataclass
class RootLease:
    """A cached root in use by one bake: a shared lock keeps pruning away from it."""

    key: str
    path: Path
    fd: int

    def release(self) -> None:
        """Let the cache prune the root again."""
        os.close(self.fd)


@dataclass(frozen=True)
class RootCache:
    """Cached pre-role roots (``<key>.tar.zst``) in one folder."""
    dir: Path

    def path(self, key: str) -> Path:
        """The cached root of ``key``."""
        return self.dir / f"{key}.tar.zst"

    def lease(self, key: str) -> RootLease | None:
        """The cached root of ``key``, held against pruning, or None when there is none."""
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.utime(path)  # recently used: pruned last
        return RootLease(key, path, fd)

    def prune(self, keep: int = KEEP, now: float | None = None) -> list[Path]:
        """Remove all but the ``keep`` most recently used roots (never one a bake is using) and
        capture temp files left by killed bakes."""
        if not self.dir.is_dir():
            return []
        now = time.time() if now is None else now
        removed: list[Path] = []
        for tmp in self.dir.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > STALE_TEMP_S:
                    tmp.unlink()
                    removed.append(tmp)
            except FileNotFoundError:
                continue
        roots = sorted(self.dir.glob("*.tar.zst"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in roots[keep:]:
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            else:
                path.unlink(missing_ok=True)
                removed.append(path)
            finally:
                os.close(fd)
        return removed
