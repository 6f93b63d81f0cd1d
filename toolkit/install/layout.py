"""The disk layout of a disk host, planned: GPT with an ESP, slot A, slot B and a persistent data partition.

Pure: ``plan_layout`` takes the machine's disks (name and size, as its hardware facts list them) and
the host's ``DiskSettings`` and returns where each partition goes, or a ``LayoutError`` saying what
does not fit. Partitions start on 1 MiB boundaries; the last MiB stays free for GPT's backup header.
The type GUIDs follow the Discoverable Partitions Specification, so systemd finds ESP and root by type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from toolkit.core.errors import InputError
from toolkit.install.settings import AUTO, MIB, DiskSettings, show_size
from toolkit.install.slots import Slot

ALIGN = MIB  # first partition at 1 MiB; every start and size a multiple of it
MIN_DATA_BYTES = 256 * MIB  # the data partition takes the rest of the disk, at least this much
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ROOT_X86_64_TYPE = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
LINUX_DATA_TYPE = "0fc63daf-8483-4772-8e79-3d69d8477de4"
DATA_LABEL = "golden-data"
ESP_LABEL = "esp"


class LayoutError(InputError):
    """The host's disk settings do not fit the machine (no disk, a named disk missing, a disk too small)."""


@dataclass(frozen=True)
class Disk:
    """One disk of the machine, as its hardware facts list it."""
    name: str  # vda, sda, nvme0n1
    size_bytes: int


@dataclass(frozen=True)
class Partition:
    """One GPT partition: its number, label, type GUID, first byte and size."""
    number: int
    label: str
    type_guid: str
    start: int
    size: int

    @property
    def end(self) -> int:
        """The first byte after the partition."""
        return self.start + self.size


@dataclass(frozen=True)
class Layout:
    """The planned partition table of one disk."""
    device: str  # /dev/vda
    disk_bytes: int
    partitions: tuple[Partition, ...]

    def slot(self, slot: Slot) -> Partition:
        """The partition that holds ``slot``."""
        return next(p for p in self.partitions if p.label == slot_label(slot))

    @property
    def data(self) -> Partition:
        """The persistent data partition (never formatted after the first install)."""
        return next(p for p in self.partitions if p.label == DATA_LABEL)


def slot_label(slot: Slot) -> str:
    """The GPT label of a slot's partition: ``golden-a`` or ``golden-b``."""
    return f"golden-{slot.value}"


def pick_disk(disks: Sequence[Disk], device: str) -> Disk:
    """The disk ``device`` names (``auto``: the first one); LayoutError when there is none."""
    if not disks:
        raise LayoutError("the machine reports no disk to install to",
                          hint="give it a disk, or set install: ram for this host")
    if device == AUTO:
        return disks[0]
    name = device.removeprefix("/dev/")
    found = next((d for d in disks if d.name == name), None)
    if found is None:
        raise LayoutError(f"disk_device {device} is not among the machine's disks "
                          f"({', '.join(d.name for d in disks)})", hint="set disk_device: auto or one of those")
    return found


def required_bytes(settings: DiskSettings) -> int:
    """The smallest disk the settings fit on: alignment, ESP, two slots, the least data, GPT's backup."""
    return ALIGN + _up(settings.esp_bytes) + 2 * _up(settings.slot_bytes) + MIN_DATA_BYTES + ALIGN


def _up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan_layout(disks: Sequence[Disk], settings: DiskSettings) -> Layout:
    """ESP, slot A, slot B, then data to the disk's last aligned MiB; LayoutError when it does not fit."""
    disk = pick_disk(disks, settings.device)
    need = required_bytes(settings)
    if disk.size_bytes < need:
        raise LayoutError(f"disk {disk.name} holds {show_size(disk.size_bytes)}, the layout needs at least "
                          f"{show_size(need)} (ESP {show_size(settings.esp_bytes)}, two slots of "
                          f"{show_size(settings.slot_bytes)}, {show_size(MIN_DATA_BYTES)} of data)",
                          hint="lower disk_slot_size or disk_esp_size, or pick a larger disk_device")
    sizes = [(ESP_LABEL, ESP_TYPE, _up(settings.esp_bytes)), (slot_label(Slot.A), ROOT_X86_64_TYPE,
             _up(settings.slot_bytes)), (slot_label(Slot.B), ROOT_X86_64_TYPE, _up(settings.slot_bytes))]
    parts, start = [], ALIGN
    for number, (label, guid, size) in enumerate(sizes, 1):
        parts.append(Partition(number, label, guid, start, size))
        start += size
    last = (disk.size_bytes - ALIGN) // ALIGN * ALIGN
    parts.append(Partition(4, DATA_LABEL, LINUX_DATA_TYPE, start, last - start))
    return Layout(f"/dev/{disk.name}", disk.size_bytes, tuple(parts))
