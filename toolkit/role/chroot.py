"""A debootstrapped Debian chroot: the same place bake-time roles run, built once per machine.

Molecule scenarios (``molecule/shared/create.yml``) and the test fixtures both start from it. The
base chroot is cached under ``cache_dir()`` by the hash of its inputs (release, mirror, package
list, version); nobody changes it: scenarios and tests work on a throwaway ``cp -a`` copy. The
mirror is read from this host's apt sources, never written into the repository.

``python -m toolkit.role.chroot ensure`` prints the cached chroot's path, building it first if
needed (about 2 minutes), so ``molecule test`` needs no environment set up by a wrapper.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from toolkit.bake.aptsources import host_mirrors
from toolkit.core.errors import GoldenError
from toolkit.core.mounts import mounts_under
from toolkit.core.run import require, run

# Bump when the way the chroot is built changes, so every machine rebuilds it.
VERSION = 1
RELEASE = "bookworm"

# What the bake's image has before roles run (DIB debian-minimal + the spec's packages) plus the
# packages our roles install, so Molecule converges without reaching the mirror on every run.
PACKAGES = (
    "python3",
    "python3-apt",
    "systemd",
    "systemd-sysv",
    "dbus",
    "ca-certificates",
    "iproute2",
    "openssh-server",
    "initramfs-tools",
    "busybox",
    "wget",
    "live-boot",
    "live-boot-initramfs-tools",
    "linux-image-amd64",
    "nginx-light",
)

class ChrootError(GoldenError):
    """The base chroot could not be built, or a copy could not be cleaned up."""


def cache_dir() -> Path:
    """Per-machine cache for slow fixtures (chroots, baked images), shared with the test suite."""
    base = Path(os.environ.get("GOLDEN_TEST_CACHE", Path.home() / ".cache" / "golden-tests"))
    base.mkdir(parents=True, exist_ok=True)
    return base


def chroot_inputs(release: str = RELEASE) -> dict[str, object]:
    """What the cached role-test chroot depends on."""
    return {
        "version": VERSION,
        "release": release,
        "mirror": host_mirrors(release).main,
        "packages": sorted(PACKAGES),
    }


def chroot_key(inputs: dict[str, object]) -> str:
    """The cache key of ``inputs``."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def unmount_all(path: Path) -> None:
    """Unmount everything below ``path``, deepest first; raise if something stays mounted."""
    for target in sorted(mounts_under(path), key=len, reverse=True):
        run(["umount", "--lazy", target], check=False)
    left = mounts_under(path)
    if left:
        raise ChrootError(f"still mounted under {path}: {', '.join(left)}", hint="unmount them, then retry")


def remove_tree(path: Path) -> None:
    """rm -rf that refuses to run while anything (a bind-mounted /dev!) is mounted below ``path``."""
    if not path.exists():
        return
    unmount_all(path)
    shutil.rmtree(path)


def build_chroot(dest: Path, inputs: dict[str, object]) -> None:
    """Debootstrap aside and rename into place, so a half-built chroot is never seen as cached."""
    require("debootstrap")
    work = dest.with_name(dest.name + ".building")
    remove_tree(work)
    packages = [str(p) for p in inputs["packages"]]  # type: ignore[attr-defined]
    try:
        run(
            ["debootstrap", "--variant=minbase", "--include=" + ",".join(packages),
             str(inputs["release"]), str(work), str(inputs["mirror"])],
            capture=True,
            what="debootstrap of the role test chroot",
        )
        (work / "etc" / "golden-test-chroot.json").write_text(json.dumps(inputs, sort_keys=True) + "\n")
        unmount_all(work)
        work.rename(dest)
    except BaseException:
        remove_tree(work)
        raise


def ensure_chroot(release: str = RELEASE) -> Path:
    """Path of the cached base chroot for ``release``; builds it on first use (takes minutes)."""
    inputs = chroot_inputs(release)
    root = cache_dir()
    dest = root / f"chroot-{release}-{chroot_key(inputs)}"
    with open(root / f"chroot-{release}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build it once
        if not dest.is_dir():
            build_chroot(dest, inputs)
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m toolkit.role.chroot``: ensure or remove the cached chroot."""
    parser = argparse.ArgumentParser(prog="python -m toolkit.role.chroot")
    sub = parser.add_subparsers(dest="step", required=True)
    ensure = sub.add_parser("ensure", help="print the cached chroot's path, building it first if needed")
    ensure.add_argument("--release", default=RELEASE)
    remove = sub.add_parser("remove", help="unmount everything below PATH, then delete it")
    remove.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.step == "ensure":
            print(ensure_chroot(args.release))
        else:
            remove_tree(args.path)
    except GoldenError as exc:
        print(f"golden: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
