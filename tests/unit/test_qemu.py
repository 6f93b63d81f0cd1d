"""qemu_argv is pure: check the command line we hand to QEMU."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.core.errors import InputError
from toolkit.lab.qemu import OVMF_CODE, OVMF_CODE_SECBOOT, VmSpec, qemu_argv, vm_command


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_netboot_with_http_bootfile() -> None:
    vm = VmSpec(name="n1", mac="52:54:00:00:00:01", serial_log=Path("/tmp/n1.log"),
                bootfile="http://10.0.2.2:8080/boot/x.ipxe")
    argv = qemu_argv(vm)
    assert argv[0] == "qemu-system-x86_64"
    assert _opt(argv, "-accel") == ["tcg"]
    assert "-nographic" in argv
    assert _opt(argv, "-serial") == ["file:/tmp/n1.log"]
    assert _opt(argv, "-m") == ["1536"]
    assert _opt(argv, "-netdev") == ["user,id=net0,bootfile=http://10.0.2.2:8080/boot/x.ipxe"]
    assert _opt(argv, "-device") == ["virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bootindex=1"]
    assert "-drive" not in argv


def test_disk_boot_puts_disk_first_and_tftp_dir() -> None:
    vm = VmSpec(name="n2", mac="52:54:00:00:00:02", serial_log=Path("/s.log"), memory_mb=512,
                disk=Path("/d/n2.qcow2"), boot_network=False, tftp_dir=Path("/t"), bootfile="chain.ipxe",
                extra_args=("-snapshot",))
    argv = qemu_argv(vm)
    assert _opt(argv, "-netdev") == ["user,id=net0,tftp=/t,bootfile=chain.ipxe"]
    devices = _opt(argv, "-device")
    assert devices[0] == "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:02"
    assert devices[1] == "virtio-blk-pci,drive=disk0,bootindex=1"
    assert _opt(argv, "-drive") == ["file=/d/n2.qcow2,if=none,id=disk0,format=qcow2"]
    assert argv[-1] == "-snapshot"


def test_network_first_then_disk() -> None:
    vm = VmSpec(name="n3", mac="52:54:00:00:00:03", serial_log=Path("/s.log"), disk=Path("/d/n3.raw"))
    devices = _opt(qemu_argv(vm), "-device")
    assert devices == ["virtio-net-pci,netdev=net0,mac=52:54:00:00:00:03,bootindex=1",
                       "virtio-blk-pci,drive=disk0,bootindex=2"]
    assert "format=raw" in _opt(qemu_argv(vm), "-drive")[0]


def test_tap_netdev() -> None:
    vm = VmSpec(name="n4", mac="52:54:00:00:00:04", serial_log=Path("/s.log"), netdev="tap:gtap0")
    assert _opt(qemu_argv(vm), "-netdev") == ["tap,id=net0,ifname=gtap0,script=no,downscript=no"]


@pytest.mark.parametrize("netdev", ["bridge", "tap:", "socket:x"])
def test_bad_netdev_is_input_error(netdev: str) -> None:
    vm = VmSpec(name="n5", mac="52:54:00:00:00:05", serial_log=Path("/s.log"), netdev=netdev)
    with pytest.raises(InputError, match="n5"):
        qemu_argv(vm)


def test_bootfile_with_comma_rejected() -> None:
    vm = VmSpec(name="n6", mac="52:54:00:00:00:06", serial_log=Path("/s.log"), bootfile="http://a/b,c")
    with pytest.raises(InputError, match="bootfile"):
        qemu_argv(vm)


def test_uefi_machine_boots_ovmf_with_its_own_vars_and_no_ipxe_rom(tmp_path: Path) -> None:
    vm = VmSpec(name="u1", mac="52:54:00:00:00:09", serial_log=tmp_path / "s.log", netdev="tap:tap0",
                firmware="uefi", uefi_vars=tmp_path / "u1.vars")
    argv = qemu_argv(vm)
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}" in argv
    assert f"if=pflash,format=raw,unit=1,file={tmp_path / 'u1.vars'}" in argv
    nic = argv[argv.index("virtio-net-pci,netdev=net0,mac=52:54:00:00:00:09,bootindex=1,romfile=")]
    assert nic.endswith(",romfile=")  # the firmware's own PXE, not the iPXE ROM, does the first DHCP
    bios = qemu_argv(VmSpec(name="b1", mac="52:54:00:00:00:0a", serial_log=tmp_path / "b.log"))
    assert not any("pflash" in a or "romfile" in a for a in bios)


@pytest.mark.parametrize("spec, needle", [
    ({"firmware": "coreboot"}, "firmware must be one of bios, uefi"),
    ({"firmware": "uefi"}, "needs its own variable store"),
    ({"secure_boot": True}, "Secure Boot needs UEFI firmware"),
])
def test_bad_firmware_is_input_error(tmp_path: Path, spec, needle) -> None:
    with pytest.raises(InputError, match=needle):
        qemu_argv(VmSpec(name="x", mac="52:54:00:00:00:0b", serial_log=tmp_path / "s.log", **spec))


def test_hostfwd_forwards_loopback_ports_only() -> None:
    vm = VmSpec(name="n1", mac="52:54:00:00:00:01", serial_log=Path("/tmp/s.log"), hostfwd=((2222, 22),))
    assert _opt(qemu_argv(vm), "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22"]
    with pytest.raises(InputError, match="hostfwd ports out of range"):
        qemu_argv(VmSpec(name="n1", mac="52:54:00:00:00:01", serial_log=Path("/tmp/s.log"), hostfwd=((22, 22),)))


def test_a_machine_in_a_namespace_runs_qemu_inside_it(tmp_path: Path) -> None:
    vm = VmSpec(name="n1", mac="52:54:00:00:00:01", serial_log=tmp_path / "s.log", netdev="tap:gl1-01",
                netns="gbt1-boot", firmware="uefi", uefi_vars=tmp_path / "v.fd")
    argv = vm_command(vm)
    assert argv[:4] == ["ip", "netns", "exec", "gbt1-boot"] and argv[4:] == qemu_argv(vm)
    assert _opt(argv, "-netdev") == ["tap,id=net0,ifname=gl1-01,script=no,downscript=no"]
    plain = VmSpec(name="n1", mac="52:54:00:00:00:01", serial_log=tmp_path / "s.log")
    assert vm_command(plain) == qemu_argv(plain)
    with pytest.raises(InputError, match="a network namespace needs a tap netdev"):
        vm_command(VmSpec(name="n1", mac="52:54:00:00:00:01", serial_log=tmp_path / "s.log", netns="ns"))


def test_secure_boot_machine_runs_ovmf_secboot_on_q35_with_smm(tmp_path: Path) -> None:
    vm = VmSpec(name="s1", mac="52:54:00:00:00:0c", serial_log=tmp_path / "s.log", netdev="tap:tap0",
                firmware="uefi", uefi_vars=tmp_path / "s1.vars", secure_boot=True)
    argv = qemu_argv(vm)
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE_SECBOOT}" in argv
    assert f"if=pflash,format=raw,unit=1,file={tmp_path / 's1.vars'}" in argv
    assert _opt(argv, "-machine") == ["q35,smm=on"]  # OVMF secboot hangs without SMM
    assert _opt(argv, "-global") == ["driver=cfi.pflash01,property=secure,value=on"]
    assert str(OVMF_CODE) not in " ".join(argv)
    plain = qemu_argv(VmSpec(**{**vm.__dict__, "secure_boot": False}))
    assert "-machine" not in plain and "-global" not in plain
