"""A lab machine's hardware: memory, disks and the SMBIOS serial its firmware reports.

Each QEMU lab machine has ``hardware.json`` beside its disk. The virtual BMC reads it at every
power-on, so a change made while the machine runs applies at its next start, the way a technician's
new DIMM or disk does: ``set_machine_hardware`` (tests, and anyone trying ``golden hw``) changes it,
a power cycle or reimage brings it in, and the agent's next report shows the difference.

Disks are virtio or NVMe (``-device nvme``), each with a serial, so ``lsblk`` on the machine tells
them apart as a real server's would. The first disk is the machine's boot disk (``VmSpec.disk``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from toolkit.core.errors import InputError
from toolkit.core.fsutil import atomic_write
from toolkit.core.run import run
from toolkit.lab.qemu import VmSpec

HARDWARE_FILE = "hardware.json"
DISK_KINDS = ("virtio", "nvme")
MAX_DISKS = 8
SERIAL_RE = re.compile(r"^[A-Za-z0-9-]{1,20}$")  # QEMU takes ',' as its option separator: none here


@dataclass(frozen=True)
class LabDisk:
    """One disk: its qcow2 file (in the machine's folder), size, serial and bus."""

    file: str
    size_gib: int
    serial: str
    kind: str = "virtio"
    readonly: bool = False  # attached read-only (-drive readonly=on): the machine cannot write it (erase e2e)


@dataclass(frozen=True)
class MachineHardware:
    """What a lab machine has when it next powers on."""

    memory_mb: int
    serial: str  # SMBIOS type 1 system serial
    disks: tuple[LabDisk, ...]


def default_hardware(node: str, lab_id: str, index: int, memory_mb: int, disks: int = 1) -> MachineHardware:
    """A machine of ``disks`` virtio disks (8 GiB, then 1 GiB each) with serials unique to its lab."""
    if not 1 <= disks <= MAX_DISKS:
        raise InputError(f"--disks must be between 1 and {MAX_DISKS}, got {disks}")
    tag = f"{lab_id[:8]}{index + 1:02d}".upper()
    return MachineHardware(memory_mb, f"GLAB-{tag}", tuple(
        LabDisk("disk.qcow2" if i == 0 else f"disk{i}.qcow2", 8 if i == 0 else 1, f"D{i}-{tag}")
        for i in range(disks)))


def changed(hw: MachineHardware, *, memory_mb: int | None = None, add_disk: str | None = None,
            add_gib: int = 1, readonly: bool = False) -> MachineHardware:
    """``hw`` with other memory and/or one more disk of kind ``add_disk`` (virtio or nvme, ``readonly``). Pure."""
    disks = hw.disks
    if add_disk is not None:
        if add_disk not in DISK_KINDS or len(disks) >= MAX_DISKS:
            raise InputError(f"a lab machine takes at most {MAX_DISKS} disks of kind {', '.join(DISK_KINDS)}")
        i = len(disks)
        disks = (*disks, LabDisk(f"disk{i}.qcow2", add_gib, f"D{i}-{hw.serial.removeprefix('GLAB-')}"[:20], add_disk,
                                 readonly))
    return replace(hw, memory_mb=memory_mb or hw.memory_mb, disks=disks)


def hardware_args(hw: MachineHardware, folder: Path) -> list[str]:
    """QEMU arguments for the SMBIOS serial and every disk after the first (which VmSpec.disk carries). Pure."""
    if not SERIAL_RE.match(hw.serial) or not all(SERIAL_RE.match(d.serial) for d in hw.disks):
        raise InputError(f"lab machine serials must match {SERIAL_RE.pattern}")
    args = ["-smbios", f"type=1,manufacturer=golden,product=lab machine,serial={hw.serial}"]
    for i, d in enumerate(hw.disks[1:], start=1):
        if d.kind not in DISK_KINDS:
            raise InputError(f"disk {d.file}: kind must be one of {', '.join(DISK_KINDS)}")
        device = "nvme" if d.kind == "nvme" else "virtio-blk-pci"
        ro = ",readonly=on" if d.readonly else ""
        args += ["-drive", f"file={folder / d.file},if=none,id=disk{i},format=qcow2{ro}",
                 "-device", f"{device},drive=disk{i},serial={d.serial}"]
    return args


def load_hardware(folder: Path) -> MachineHardware | None:
    """The machine's hardware file, or None for a machine without one (labs made before it existed)."""
    path = folder / HARDWARE_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return MachineHardware(int(data["memory_mb"]), str(data["serial"]),
                           tuple(LabDisk(**d) for d in data["disks"]))


def save_hardware(folder: Path, hw: MachineHardware) -> None:
    """Write the machine's hardware file atomically (the BMC may read it at any moment)."""
    atomic_write(folder / HARDWARE_FILE, json.dumps(asdict(hw), indent=1))


def set_machine_hardware(folder: Path, *, memory_mb: int | None = None, add_disk: str | None = None,
                         readonly: bool = False) -> MachineHardware:
    """Change the memory of the lab machine in ``folder`` (``<home>/lab/nodes/<name>``) and/or add a disk
    (virtio or nvme, attached read-only with ``readonly``); it applies at the machine's next power-on."""
    hw = load_hardware(folder) if folder.is_dir() else None
    if hw is None:
        raise InputError(f"{folder}: not a QEMU lab machine's folder with a {HARDWARE_FILE}")
    new = changed(hw, memory_mb=memory_mb, add_disk=add_disk, readonly=readonly)
    save_hardware(folder, new)
    return new


def fitted(spec: VmSpec) -> VmSpec:
    """``spec`` with the hardware its file says now (memory, serials, disks), every disk file created.

    Unchanged for a machine without a hardware folder or file."""
    folder = spec.hardware_dir
    hw = load_hardware(folder) if folder is not None else None
    if folder is None or hw is None:
        return spec
    for d in hw.disks:
        if not (folder / d.file).exists():
            run(["qemu-img", "create", "-q", "-f", "qcow2", folder / d.file, f"{d.size_gib}G"], capture=True)
    return replace(spec, memory_mb=hw.memory_mb, disk=folder / hw.disks[0].file, disk_serial=hw.disks[0].serial,
                   extra_args=(*spec.extra_args, *hardware_args(hw, folder)))
