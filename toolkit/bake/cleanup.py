"""Rollback for a bake that did not finish: kill what still runs in its chroot, unmount what DIB
mounted under its staging folder, detach its loop devices.

DIB has its own exit trap, but a SIGKILL (or our 5 s grace after SIGTERM) can cut it short; this
runs after DIB is gone, whatever happened, and only touches things under the bake's own folder.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from toolkit.core.mounts import mounts_under
from toolkit.core.run import run

log = logging.getLogger("golden.bake")


def _inside(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def chroot_processes(prefix: Path, proc: Path = Path("/proc")) -> list[int]:
    """PIDs of processes whose root is at or below ``prefix``."""
    pre = str(prefix.resolve())
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            root = os.readlink(entry / "root")
        except OSError:
            continue
        if _inside(root, pre):
            pids.append(int(entry.name))
    return pids


def loop_devices(prefix: Path, sys_block: Path = Path("/sys/block")) -> list[str]:
    """Loop devices whose backing file is at or below ``prefix``."""
    pre = str(prefix.resolve())
    found = []
    for backing in sys_block.glob("loop*/loop/backing_file"):
        try:
            target = backing.read_text().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if _inside(target, pre):
            found.append(f"/dev/{backing.parent.parent.name}")
    return found


def release(prefix: Path) -> list[str]:
    """Undo everything a bake left under ``prefix``; return the mounts that could not be removed."""
    if not prefix.exists():
        return []
    for pid in chroot_processes(prefix):
        log.warning("killing process %d still running in the bake chroot", pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for attempt in range(5):
        points = mounts_under(prefix)
        if not points:
            break
        for point in points:
            res = run(["umount", point], check=False, capture=True)
            if res.returncode != 0 and attempt >= 2:
                run(["umount", "-l", point], check=False, capture=True)
        time.sleep(0.2 * attempt)
    for dev in loop_devices(prefix):
        run(["losetup", "-d", dev], check=False, capture=True)
    return mounts_under(prefix)
