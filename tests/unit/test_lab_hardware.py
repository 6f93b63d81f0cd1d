"""The lab machine's hardware file: defaults, changes a technician would make, the QEMU arguments they
become, and the BMC fitting them at power-on (disk files created then)."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.core.errors import InputError
from toolkit.lab.hardware import (
    LabDisk,
    MachineHardware,
    changed,
    default_hardware,
    fitted,
    hardware_args,
    load_hardware,
    save_hardware,
    set_machine_hardware,
)
from toolkit.lab.qemu import VmSpec, qemu_argv


def test_default_machine_has_serials_unique_to_its_lab_and_place():
    hw = default_hardware("lab-n02", "0a1b2c3d4e", 1, 2048, disks=2)
    assert hw == MachineHardware(2048, "GLAB-0A1B2C3D02", (LabDisk("disk.qcow2", 8, "D0-0A1B2C3D02"),
                                                           LabDisk("disk1.qcow2", 1, "D1-0A1B2C3D02")))
    assert default_hardware("lab-n02", "ffffffff", 1, 2048).serial != hw.serial


@pytest.mark.parametrize("disks", [0, 9])
def test_disk_count_is_bounded(disks):
    with pytest.raises(InputError, match="--disks must be between 1 and 8"):
        default_hardware("n", "abcd", 0, 1024, disks)


def test_a_technician_removes_memory_and_adds_an_nvme_disk():
    hw = changed(default_hardware("n", "abcdef12", 0, 2048, 2), memory_mb=1536, add_disk="nvme")
    assert hw.memory_mb == 1536
    assert hw.disks[-1] == LabDisk("disk2.qcow2", 1, "D2-ABCDEF1201", "nvme")


def test_unknown_disk_kind_is_refused():
    with pytest.raises(InputError, match="kind virtio, nvme"):
        changed(default_hardware("n", "abcdef12", 0, 2048), add_disk="scsi")


def test_qemu_arguments_for_serial_and_extra_disks(tmp_path):
    hw = changed(default_hardware("n", "abcdef12", 0, 2048, 2), add_disk="nvme")
    assert hardware_args(hw, tmp_path) == [
        "-smbios", "type=1,manufacturer=golden,product=lab machine,serial=GLAB-ABCDEF1201",
        "-drive", f"file={tmp_path}/disk1.qcow2,if=none,id=disk1,format=qcow2",
        "-device", "virtio-blk-pci,drive=disk1,serial=D1-ABCDEF1201",
        "-drive", f"file={tmp_path}/disk2.qcow2,if=none,id=disk2,format=qcow2",
        "-device", "nvme,drive=disk2,serial=D2-ABCDEF1201",
    ]


def test_a_disk_attached_read_only(tmp_path):
    hw = changed(default_hardware("n", "abcdef12", 0, 2048, 2), add_disk="virtio", readonly=True)
    assert hw.disks[-1].readonly and not hw.disks[1].readonly
    args = hardware_args(hw, tmp_path)
    assert f"file={tmp_path}/disk2.qcow2,if=none,id=disk2,format=qcow2,readonly=on" in args
    assert f"file={tmp_path}/disk1.qcow2,if=none,id=disk1,format=qcow2" in args


@pytest.mark.parametrize("serial", ["a,b", "x" * 21, "", "a b"])
def test_serials_that_would_break_a_qemu_option_are_refused(tmp_path, serial):
    hw = MachineHardware(1024, serial, (LabDisk("disk.qcow2", 8, "D0"),))
    with pytest.raises(InputError, match="serials must match"):
        hardware_args(hw, tmp_path)
    spec = VmSpec("n", "52:54:00:00:00:01", tmp_path / "s.log", disk=tmp_path / "d.qcow2", disk_serial=serial)
    with pytest.raises(InputError, match="a disk serial is 1-20"):
        qemu_argv(spec)


def test_the_bmc_fits_the_hardware_at_power_on_and_creates_new_disks(tmp_path: Path):
    save_hardware(tmp_path, default_hardware("n", "abcdef12", 0, 2048, 1))
    set_machine_hardware(tmp_path, memory_mb=1024, add_disk="virtio")
    assert load_hardware(tmp_path) is not None
    spec = fitted(VmSpec("n", "52:54:00:00:00:01", tmp_path / "s.log", memory_mb=4096, hardware_dir=tmp_path))
    argv = qemu_argv(spec)
    assert argv[argv.index("-m") + 1] == "1024"
    assert f"file={tmp_path}/disk.qcow2,if=none,id=disk0,format=qcow2" in argv
    assert "virtio-blk-pci,drive=disk0,bootindex=2,serial=D0-ABCDEF1201" in argv
    assert "virtio-blk-pci,drive=disk1,serial=D1-ABCDEF1201" in argv
    assert (tmp_path / "disk.qcow2").stat().st_size > 0 and (tmp_path / "disk1.qcow2").stat().st_size > 0


def test_a_machine_without_a_hardware_file_is_left_as_it_is(tmp_path):
    spec = VmSpec("n", "52:54:00:00:00:01", tmp_path / "s.log", memory_mb=4096, hardware_dir=tmp_path)
    assert fitted(spec) == spec
    with pytest.raises(InputError, match="not a QEMU lab machine's folder"):
        set_machine_hardware(tmp_path, memory_mb=1024)
