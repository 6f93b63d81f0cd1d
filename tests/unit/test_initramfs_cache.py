"""The initramfs cache's logic on a fake root: which input changes rebuild, what is reused byte for
byte, and that a damaged or torn entry is never used. (tests/integration/test_bake_initramfs_cache.py
does the same with the real update-initramfs in a Debian chroot.)"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from toolkit.bake.initramfs import InitramfsCache, adopt_initramfs, initramfs_key, provide_initramfs

KERNEL = "6.1.0-50-amd64"
EPOCH = 1767225600


def _status(packages: dict[str, str]) -> str:
    return "\n\n".join(f"Package: {p}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {v}"
                       for p, v in packages.items()) + "\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "usr/lib/modules" / KERNEL / "kernel").mkdir(parents=True)
    (r / "lib").symlink_to("usr/lib")  # merged /usr, as debootstrap makes bookworm
    (r / "usr/lib/modules" / KERNEL / "kernel/e1000.ko").write_bytes(b"\x7fELF e1000")
    (r / "etc/initramfs-tools/hooks").mkdir(parents=True)
    (r / "etc/initramfs-tools/initramfs.conf").write_text("BUSYBOX=y\n")
    (r / "etc/initramfs-tools/hooks/golden-verify").write_text("#!/bin/sh\ncopy_exec /usr/bin/sha256sum\n")
    (r / "var/lib/dpkg").mkdir(parents=True)
    (r / "var/lib/dpkg/status").write_text(_status({"linux-image-amd64": "6.1.158-1", "busybox": "1:1.35.0-4"}))
    (r / "boot").mkdir()
    return r


class FakeBuild:
    """update-initramfs standing in: an initrd made of its inputs, counted."""

    def __init__(self, root: Path) -> None:
        self.root, self.runs = root, 0

    def __call__(self) -> None:
        self.runs += 1
        hook = (self.root / "etc/initramfs-tools/hooks/golden-verify").read_bytes()
        (self.root / "boot" / f"initrd.img-{KERNEL}").write_bytes(b"initrd:" + hashlib.sha256(hook).digest() * 1000)


def _initrd(root: Path) -> Path:
    return root / "boot" / f"initrd.img-{KERNEL}"


def _cache(tmp_path: Path) -> InitramfsCache:
    return InitramfsCache(tmp_path / "cache" / "initramfs")


def test_unchanged_inputs_reuse_the_stored_initramfs_byte_for_byte(root: Path, tmp_path: Path) -> None:
    build, cache = FakeBuild(root), _cache(tmp_path)
    assert provide_initramfs(root, EPOCH, cache, build) == "built"
    made = _initrd(root).read_bytes()
    _initrd(root).write_bytes(b"a later bake's root, before its initramfs step")
    assert provide_initramfs(root, EPOCH, cache, build) == "reused"
    assert _initrd(root).read_bytes() == made
    assert build.runs == 1


def _change_hook(root: Path) -> None:
    (root / "etc/initramfs-tools/hooks/golden-verify").write_text("#!/bin/sh\ncopy_exec /usr/bin/sha512sum\n")


def _change_kernel_package(root: Path) -> None:
    (root / "var/lib/dpkg/status").write_text(_status({"linux-image-amd64": "6.1.159-1", "busybox": "1:1.35.0-4"}))


def _change_modules(root: Path) -> None:
    (root / "usr/lib/modules" / KERNEL / "kernel/igb.ko").write_bytes(b"\x7fELF igb")


def _change_config(root: Path) -> None:
    (root / "etc/initramfs-tools/initramfs.conf").write_text("BUSYBOX=y\nCOMPRESS=xz\n")


def _change_golden_script(root: Path) -> None:
    (root / "usr/share/golden/live-boot").mkdir(parents=True)
    (root / "usr/share/golden/live-boot/9995-golden-verify.sh").write_text("verify\n")


def _make_hook_executable(root: Path) -> None:
    (root / "etc/initramfs-tools/hooks/golden-verify").chmod(0o755)


@pytest.mark.parametrize("change", [_change_hook, _change_kernel_package, _change_modules, _change_config,
                                    _change_golden_script, _make_hook_executable])
def test_a_changed_input_rebuilds_the_initramfs(root: Path, tmp_path: Path, change: Callable[[Path], None]) -> None:
    build, cache = FakeBuild(root), _cache(tmp_path)
    provide_initramfs(root, EPOCH, cache, build)
    change(root)
    assert provide_initramfs(root, EPOCH, cache, build) == "built"
    assert build.runs == 2


def test_another_epoch_is_another_initramfs(root: Path) -> None:
    assert initramfs_key(root, KERNEL, EPOCH) != initramfs_key(root, KERNEL, EPOCH + 1)


def test_a_corrupted_entry_is_ignored_and_rebuilt(root: Path, tmp_path: Path) -> None:
    build, cache = FakeBuild(root), _cache(tmp_path)
    provide_initramfs(root, EPOCH, cache, build)
    made = _initrd(root).read_bytes()
    entry = next(cache.dir.glob("*.img"))
    entry.write_bytes(entry.read_bytes()[:-1] + b"X")  # a flipped byte on disk
    assert provide_initramfs(root, EPOCH, cache, build) == "built"
    assert build.runs == 2
    assert _initrd(root).read_bytes() == made
    assert cache.fetch(entry.stem) == made  # stored again, whole


def test_a_torn_store_without_its_sha256_is_never_used(root: Path, tmp_path: Path) -> None:
    build, cache = FakeBuild(root), _cache(tmp_path)
    provide_initramfs(root, EPOCH, cache, build)
    next(cache.dir.glob("*.sha256")).unlink()
    assert provide_initramfs(root, EPOCH, cache, build) == "built"


def test_a_symlink_out_of_the_root_is_not_followed_into_the_build_host(root: Path, tmp_path: Path) -> None:
    before = initramfs_key(root, KERNEL, EPOCH)
    (root / "etc/modprobe.d").symlink_to(tmp_path)  # absolute: outside the image
    (tmp_path / "host-only.conf").write_text("options x y\n")
    assert initramfs_key(root, KERNEL, EPOCH) == before


def test_old_entries_are_pruned_least_recently_used_first(root: Path, tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    src = tmp_path / "initrd"
    src.write_bytes(b"x")
    for i in range(5):
        cache.store(f"k{i}", src)
    cache.fetch("k0")  # used: kept
    removed = cache.prune(keep=2)
    assert sorted(p.stem for p in removed) == ["k1", "k2", "k3"]
    assert sorted(p.stem for p in cache.dir.glob("*.img")) == ["k0", "k4"]


def test_a_layer_that_leaves_the_inputs_alone_reuses_its_parents_initramfs(root: Path, tmp_path: Path) -> None:
    build, cache = FakeBuild(root), _cache(tmp_path)
    parent = tmp_path / "parent"
    shutil.copytree(root, parent, symlinks=True)
    _initrd(parent).write_bytes(b"the parent's initrd")
    adopt_initramfs(parent, EPOCH, cache)
    (root / "etc/kvstore.conf").parent.mkdir(parents=True, exist_ok=True)
    (root / "etc/kvstore.conf").write_text("port 8080\n")  # what the layer's role did: not an input
    assert provide_initramfs(root, EPOCH, cache, build) == "reused"
    assert _initrd(root).read_bytes() == b"the parent's initrd"
    _change_hook(root)  # a layer that adds a hook builds its own
    assert provide_initramfs(root, EPOCH, cache, build) == "built"
