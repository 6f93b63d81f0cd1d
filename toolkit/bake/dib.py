"""The diskimage-builder backend: command line, ``DIB_*`` environment, block-device config, phases.

Everything here is pure: it turns a BakePlan plus paths into a DibInvocation. Only ``DIB_*``
variables reach the chroot, and all of them are recorded in the manifest, so none may hold a
secret; hook plumbing (``GOLDEN_*``, ``ELEMENTS_PATH``) stays outside the chroot.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from toolkit.bake.aptsources import Mirrors
from toolkit.bake.plan import BakePlan

IMAGE_NAME = "image"

# Partition-less: one loop file, one filesystem, mounted as /. Netboot needs no partition table
# and these build hosts have no device-mapper for kpartx.
BLOCK_DEVICE_CONFIG = """\
- local_loop:
    name: image0
- mkfs:
    name: mkfs_root
    base: image0
    type: ext4
    label: cloudimg-rootfs
    mount:
      mount_point: /
      fstab:
        options: "defaults"
        fsck-passno: 1
"""


@dataclass(frozen=True)
class BakePaths:
    """Where one bake works; all inside its staging folder so cleanup has one place to look."""

    work: Path

    @property
    def tmp(self) -> Path:  # DIB's TMP_DIR: its build and image tmpfs mounts land here
        """DIB's TMP_DIR."""
        return self.work / "tmp"

    @property
    def out(self) -> Path:
        """Where DIB writes the image."""
        return self.work / "out"

    @property
    def cache(self) -> Path:  # per-bake DIB_IMAGE_CACHE, linked to the shared caches
        """The per-bake DIB_IMAGE_CACHE."""
        return self.work / "dib-cache"

    @property
    def hook(self) -> Path:  # plan and results exchanged with our DIB hooks
        """Our hooks' plan and results."""
        return self.work / "hook"

    @property
    def output_prefix(self) -> Path:
        """DIB's ``-o``: its outputs are named after it."""
        return self.out / IMAGE_NAME

    @property
    def raw(self) -> Path:
        """The raw root file system DIB writes."""
        return self.out / f"{IMAGE_NAME}.raw"

    @property
    def squashfs(self) -> Path:
        """The squashed root."""
        return self.out / f"{IMAGE_NAME}.squashfs"

    @property
    def rootfs_mount(self) -> Path:
        """Where the raw image is mounted read-only to squash it."""
        return self.work / "rootfs"

    @property
    def vmlinuz(self) -> Path:
        """The kernel DIB extracts."""
        return self.out / f"{IMAGE_NAME}.vmlinuz"

    @property
    def initrd(self) -> Path:
        """The initramfs DIB extracts."""
        return self.out / f"{IMAGE_NAME}.initrd"

    @property
    def dpkg_manifest(self) -> Path:
        """DIB's list of installed packages."""
        return self.out / f"{IMAGE_NAME}.d" / "dib-manifests" / f"dib-manifest-dpkg-{IMAGE_NAME}"

    @property
    def checks_result(self) -> Path:
        """The bake checks' results, written by our hook."""
        return self.hook / "checks.json"

    @property
    def origins_result(self) -> Path:  # package -> archive it came from (written by the checks hook)
        """Which archive each package came from."""
        return self.hook / "packages.json"

    @property
    def roles_result(self) -> Path:
        """The roles' results, written by our hook."""
        return self.hook / "roles.json"


@dataclass(frozen=True)
class DibInvocation:
    """disk-image-create's argv and environment: what reaches the chroot and what stays outside."""
    argv: tuple[str, ...]
    dib_env: dict[str, str]  # recorded in the manifest; reaches the chroot
    host_env: dict[str, str]  # plumbing for our hooks; never enters the chroot

    @property
    def env(self) -> dict[str, str]:
        """The whole environment DIB runs with."""
        return {**self.host_env, **self.dib_env}

    def describe(self) -> str:
        """The command line, shell-quoted."""
        return shlex.join(self.argv)


def apt_sources_conf(mirrors: Mirrors, release: str, components: str = "main") -> str:
    """DIB's DIB_APT_SOURCES_CONF: the release, its updates and its security suite."""
    lines = [
        f"default:deb {mirrors.main} {release} {components}",
        f"updates:deb {mirrors.main} {release}-updates {components}",
    ]
    if mirrors.security:
        lines.append(f"security:deb {mirrors.security} {release}-security {components}")
    return "\n".join(lines)


def dib_command(
    plan: BakePlan,
    paths: BakePaths,
    mirrors: Mirrors,
    *,
    use_debootstrap_cache: bool,
    python: str = sys.executable,
    project: Path | None = None,
) -> DibInvocation:
    """The disk-image-create invocation for ``plan``."""
    release = plan.spec.base.release
    dib_env = {
        "DIB_RELEASE": release,
        "DIB_DISTRIBUTION_MIRROR": mirrors.main,
        "DIB_APT_SOURCES_CONF": apt_sources_conf(mirrors, release),
        "DIB_BLOCK_DEVICE_CONFIG": BLOCK_DEVICE_CONFIG,
        "DIB_IMAGE_CACHE": str(paths.cache),
        "DIB_APT_LOCAL_CACHE": "1",
        "DIB_DEBOOTSTRAP_CACHE": "1",
        "DIB_GOLDEN_BUILD_ID": plan.build_id,
        "DIB_GOLDEN_IMAGE": plan.image,
    }
    if mirrors.security:
        dib_env["DIB_DEBIAN_SECURITY_MIRROR"] = mirrors.security
    if use_debootstrap_cache:
        dib_env["DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE"] = "1"
    dib_env.update(plan.spec.dib_env)

    bindir = str(Path(python).parent)
    host_env = {
        "ELEMENTS_PATH": ":".join(str(p) for p in plan.elements_path),
        "TMP_DIR": str(paths.tmp),
        "GOLDEN_PYTHON": python,
        "GOLDEN_HOOK_DIR": str(paths.hook),
        "PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    if project is not None:
        host_env["PYTHONPATH"] = str(project)

    argv = [
        str(Path(bindir) / "disk-image-create"),
        "-a", "amd64",
        "-o", str(paths.output_prefix),
        # The finished root filesystem as a raw ext4 file (DIB just renames it: no conversion). We
        # squash it ourselves: DIB's own squashfs output (which must be the *first* -t type) is
        # hard-wired to xz, minutes on two cores and slow to unpack in an emulated machine.
        "-t", "raw",
        "--no-tmpfs",
    ]
    if plan.packages:
        argv += ["-p", ",".join(plan.packages)]
    # disk-image-create parses its options with util-linux getopt, which stops at "--", so no
    # element name can be read as an option (getopt otherwise permutes: "--help" after the elements
    # still counts). DIB later word-splits the element list, so the spec's name patterns still matter.
    argv += ["--", *plan.elements]
    return DibInvocation(argv=tuple(argv), dib_env=dib_env, host_env=host_env)


# Kernel file systems and DIB's mount points are empty directories in the image; keep them so.
SQUASHFS_EXCLUDES = ("proc/*", "sys/*", "dev/*", "lost+found")


def squashfs_command(source: Path, dest: Path, level: int = 3) -> list[str]:
    """mksquashfs of the mounted image. zstd at a low level: a fraction of xz's time (mksquashfs's
    zstd default, level 15, is nearly as slow as xz), and fast to unpack at boot (Debian kernels
    have SQUASHFS_ZSTD)."""
    return ["mksquashfs", str(source), str(dest), "-comp", "zstd", "-Xcompression-level", str(level),
            "-noappend", "-no-progress", "-wildcards", "-e", *SQUASHFS_EXCLUDES]


# -- reading DIB's output -------------------------------------------------------------------------

_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| ")
_RUNNING = re.compile(r"dib-run-parts Running \S*/([a-z0-9-]+\.d)/(\S+)\s*$")
_FIXED = (
    ("Calculating image size", "sizing the image"),
    ("Running hooks from", None),
    ("mksquashfs", "squashfs"),
    ("Parallel mksquashfs", "squashfs"),
    ("Build completed successfully", "done"),
)


def strip_timestamp(line: str) -> str:
    """A DIB log line without its leading timestamp."""
    return _TS.sub("", line)


def parse_phase(line: str) -> str | None:
    """The DIB step a log line announces (``root.d/08-debootstrap``), or None."""
    text = strip_timestamp(line)
    m = _RUNNING.search(text)
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    for needle, phase in _FIXED:
        if phase and text.startswith(needle):
            return phase
    return None


FAIL_MARK = "golden-step-failed: "


def parse_failure(line: str) -> str | None:
    """Our hooks announce a failure with a marker line naming the step (role, task, check)."""
    text = strip_timestamp(line)
    idx = text.find(FAIL_MARK)
    return text[idx + len(FAIL_MARK):].strip() if idx >= 0 else None
