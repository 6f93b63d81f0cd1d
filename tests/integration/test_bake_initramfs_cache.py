"""The initramfs cache with the real update-initramfs in a Debian chroot (the bake's own command):
a changed hook rebuilds the initramfs, unchanged inputs reuse the stored one, and the stored bytes are
the very bytes update-initramfs makes again from the same inputs (it is reproducible), so a reuse
ships what a rebuild would have."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.bake.initramfs import InitramfsCache, kernel_versions, provide_initramfs
from toolkit.bake.packerbuild import initramfs_command
from toolkit.core.run import run

pytestmark = pytest.mark.integration

EPOCH = 1767225600  # 2026-01-01T00:00:00Z, a package snapshot's time
HOOK = """#!/bin/sh
[ "$1" = prereqs ] && exit 0
mkdir -p "$DESTDIR/etc"
echo "added by a changed hook" > "$DESTDIR/etc/golden-test-hook"
"""


@pytest.mark.timeout(900)
def test_a_changed_hook_rebuilds_and_unchanged_inputs_reuse_byte_for_byte(chroot_workdir: Path, tmp_path: Path) -> None:
    root = chroot_workdir
    (version,) = kernel_versions(root)
    initrd = root / "boot" / f"initrd.img-{version}"
    cache = InitramfsCache(tmp_path / "cache")
    runs: list[int] = []

    def update_initramfs() -> None:
        runs.append(1)
        run(initramfs_command(root, EPOCH), capture=True, timeout=600)

    assert provide_initramfs(root, EPOCH, cache, update_initramfs) == "built"
    first = initrd.read_bytes()

    initrd.write_bytes(b"stale")
    assert provide_initramfs(root, EPOCH, cache, update_initramfs) == "reused"
    assert initrd.read_bytes() == first
    assert len(runs) == 1

    hook = root / "etc/initramfs-tools/hooks/golden-test-hook"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    assert provide_initramfs(root, EPOCH, cache, update_initramfs) == "built"
    assert len(runs) == 2
    assert initrd.read_bytes() != first

    hook.unlink()  # the inputs of the first build again: its stored initramfs comes back
    assert provide_initramfs(root, EPOCH, cache, update_initramfs) == "reused"
    assert initrd.read_bytes() == first
    update_initramfs()  # and update-initramfs from those inputs makes exactly those bytes
    assert initrd.read_bytes() == first
