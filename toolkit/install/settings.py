"""What a host's inventory says about where it runs: in RAM (the default) or installed to its disk.

``DiskSettings`` carries the disk variables with their defaults; ``parse_size`` is the one reader of
sizes like ``512M`` or ``8GiB`` (binary units, as sgdisk and systemd-repart count them).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from enum import StrEnum

MIB = 1 << 20
AUTO = "auto"  # disk_device: the machine's first disk
_SIZE = re.compile(r"^(\d+)\s*([KMGT])(?:i?B)?$", re.IGNORECASE)
_UNITS = {"K": 1 << 10, "M": MIB, "G": 1 << 30, "T": 1 << 40}


class InstallMode(StrEnum):
    """Where a host runs its build."""
    RAM = "ram"
    DISK = "disk"


@dataclass(frozen=True)
class DiskSettings:
    """How a disk host's disk is laid out: which disk, the ESP and slot sizes, the data mount, boot tries."""
    device: str = AUTO  # "auto" (the first disk) or an absolute /dev path
    esp_bytes: int = 512 * MIB
    slot_bytes: int = 4096 * MIB
    data_mount: str = "/var/lib/golden-data"
    boot_tries: int = 3  # systemd-boot's counter on a new entry: attempts before it falls back


def parse_size(text: str) -> int:
    """Bytes of ``512M``, ``8G``, ``8GiB``, ``1T`` (binary units); ValueError for anything else."""
    m = _SIZE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size like 512M or 8G")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def show_size(n: int) -> str:
    """``n`` bytes in the largest binary unit that divides them (``512M``, ``8G``), else MiB rounded up."""
    for unit in ("T", "G", "M"):
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return f"{-(-n // MIB)}M"


def check_device(text: str) -> str:
    """``auto`` or an absolute, normalized /dev path; ValueError otherwise."""
    if text == AUTO:
        return text
    if not text.startswith("/dev/") or posixpath.normpath(text) != text:
        raise ValueError(f"{text!r} must be 'auto' or a device path like /dev/sda")
    return text


def check_mount(text: str) -> str:
    """An absolute, normalized mount point other than / (and outside /boot); ValueError otherwise."""
    norm = posixpath.normpath(text) if text else ""
    if not text.startswith("/") or norm != text or norm == "/" or (norm + "/").startswith("/boot/"):
        raise ValueError(f"{text!r} must be an absolute path like /var/lib/golden-data (not / or under /boot)")
    return text
