"""QEMU machines for the lab and the netboot tests: one pure argv builder, one starter.

KVM is present on our build hosts but fails in firmware, so every machine uses ``-accel tcg``.
The NIC is virtio-net with Debian's iPXE ROM (package ipxe-qemu), so a machine netboots
straight into iPXE. With ``netdev="user"`` QEMU's slirp DHCP hands out ``bootfile`` (an
http:// URL or a name inside ``tftp_dir``) and the guest reaches the host's 127.0.0.1 as 10.0.2.2.

The serial port goes to ``serial_log``; with ``console_socket`` it is a unix socket
(CONSOLE_SOCKET beside the log, what a lab BMC bridges to Serial-over-LAN) and QEMU still writes
everything the guest prints to ``serial_log`` whether anyone is connected or not.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.errors import InputError, ToolMissingError
from toolkit.core.run import Process, require, spawn

# Debian's ipxe-qemu ships the ROMs here and QEMU's search path includes it. We deliberately do
# NOT pass romfile=: measured with QEMU 7.2, an explicit romfile (even the same file) leaves SeaBIOS
# with "No bootable device", while the device's default ROM netboots.
IPXE_ROM_DIR = Path("/usr/lib/ipxe/qemu")
IPXE_VIRTIO_ROM = "efi-virtio.rom"

QEMU_BINARY = "qemu-system-x86_64"

# UEFI machines: Debian's OVMF (package ovmf), without Secure Boot. The code is shared read-only;
# every machine gets its own copy of the variable store (boot entries are written there).
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
FIRMWARES = ("bios", "uefi")
# Secure Boot: OVMF built with SMM (the variable store is only writable from SMM, so the OS cannot
# replace the enrolled keys), which needs a q35 machine with SMM on and the flash marked secure.
# Its variable store is a per-machine copy with golden's keys enrolled (toolkit.trust.secureboot.enrol).
OVMF_CODE_SECBOOT = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
SECBOOT_MACHINE = ("-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on")

# The socket's path is given relative to the machine's folder (QEMU runs there): a unix socket path
# is limited to 107 bytes and a lab's folder in a test's tmp_path can be longer than that.
CONSOLE_SOCKET = "console.sock"


@dataclass(frozen=True)
class VmSpec:
    """A QEMU machine to start: name, MAC, serial log, memory and network."""
    name: str
    mac: str
    serial_log: Path
    memory_mb: int = 1536
    disk: Path | None = None
    boot_network: bool = True
    tftp_dir: Path | None = None
    bootfile: str | None = None
    netdev: str = "user"  # "user" (slirp) or "tap:<ifname>"
    extra_args: tuple[str, ...] = ()
    # bios: SeaBIOS, the NIC's iPXE ROM does the network boot. uefi: OVMF's own network stack
    # (VirtioNetDxe + PXE base code) does the first DHCP and TFTP, as on a real UEFI server; the
    # NIC carries no iPXE ROM, so iPXE runs only if the PXE server hands it out (snponly.efi).
    firmware: str = "bios"
    uefi_vars: Path | None = None  # this machine's writable copy of OVMF_VARS (uefi only)
    secure_boot: bool = False  # uefi only: OVMF's secboot build; uefi_vars must already hold the enrolled keys
    hostfwd: tuple[tuple[int, int], ...] = ()  # (loopback port, guest port) forwards, user networking only
    # A tap lives in one network namespace and QEMU opens it by name there: a machine whose tap is in
    # a namespace runs inside it (``ip netns exec``). None: the caller's namespace.
    netns: str | None = None
    disk_serial: str | None = None  # what lsblk shows as the boot disk's serial
    # the folder holding the machine's hardware.json (toolkit.lab.hardware), read at every start
    hardware_dir: Path | None = None
    console_socket: bool = False  # the serial port on CONSOLE_SOCKET too (server, no wait), see the docstring


def _netdev_arg(vm: VmSpec) -> str:
    if vm.netdev == "user":
        parts = ["user", "id=net0"]
        if vm.tftp_dir is not None:
            parts.append(f"tftp={vm.tftp_dir}")
        if vm.bootfile:
            if "," in vm.bootfile:
                raise InputError(f"VM {vm.name}: bootfile may not contain ',' (QEMU option separator): {vm.bootfile}")
            parts.append(f"bootfile={vm.bootfile}")
        for host_port, guest_port in vm.hostfwd:
            if not (1024 <= host_port <= 65535 and 1 <= guest_port <= 65535):
                raise InputError(f"VM {vm.name}: hostfwd ports out of range: {host_port} -> {guest_port}")
            parts.append(f"hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}")
        return ",".join(parts)
    if vm.netdev.startswith("tap:") and len(vm.netdev) > 4:
        ifname = vm.netdev[4:]
        return f"tap,id=net0,ifname={ifname},script=no,downscript=no"
    raise InputError(f"VM {vm.name}: netdev must be 'user' or 'tap:<ifname>', got {vm.netdev!r}")


def console_socket_path(vm: VmSpec) -> Path:
    """Where a ``console_socket`` machine's serial socket is: beside its serial log. Pure."""
    return vm.serial_log.parent / CONSOLE_SOCKET


def _serial_args(vm: VmSpec) -> list[str]:
    if not vm.console_socket:
        return ["-serial", f"file:{vm.serial_log}"]
    if "," in str(vm.serial_log):
        raise InputError(f"VM {vm.name}: the serial log path may not contain ',' (QEMU option separator)")
    return ["-chardev", f"socket,id=ser0,path={CONSOLE_SOCKET},server=on,wait=off,logfile={vm.serial_log}",
            "-serial", "chardev:ser0"]


def qemu_argv(vm: VmSpec) -> list[str]:
    """The full QEMU command line for ``vm``. Pure."""
    # bootindex on the devices, not -boot order=: SeaBIOS ignores "n" for -device NICs.
    # Network first (disk second, for when iPXE gives up) or disk only.
    nic_index = ",bootindex=1" if vm.boot_network else ""
    disk_index = ",bootindex=2" if vm.boot_network else ",bootindex=1"
    if vm.firmware not in FIRMWARES:
        raise InputError(f"VM {vm.name}: firmware must be one of {', '.join(FIRMWARES)}, got {vm.firmware!r}")
    if vm.firmware == "uefi" and vm.uefi_vars is None:
        raise InputError(f"VM {vm.name}: a UEFI machine needs its own variable store (uefi_vars)")
    if vm.disk_serial is not None and not re.fullmatch(r"[A-Za-z0-9-]{1,20}", vm.disk_serial):
        raise InputError(f"VM {vm.name}: a disk serial is 1-20 letters, digits or '-', got {vm.disk_serial!r}")
    if vm.secure_boot and vm.firmware != "uefi":
        raise InputError(f"VM {vm.name}: Secure Boot needs UEFI firmware, got {vm.firmware!r}")
    nic_rom = ",romfile=" if vm.firmware == "uefi" else ""
    argv = [
        QEMU_BINARY,
        "-name", vm.name,
        "-accel", "tcg",
        "-m", str(vm.memory_mb),
        "-smp", "1",
        "-nographic",
        "-nodefaults",
        "-no-user-config",
        *_serial_args(vm),
        "-monitor", "none",
        "-boot", "strict=on,reboot-timeout=5000",
        "-netdev", _netdev_arg(vm),
        "-device", f"virtio-net-pci,netdev=net0,mac={vm.mac}{nic_index}{nic_rom}",
    ]
    if vm.secure_boot:
        argv[5:5] = SECBOOT_MACHINE  # after -accel tcg: the machine type before any device
    if vm.firmware == "uefi":
        code = OVMF_CODE_SECBOOT if vm.secure_boot else OVMF_CODE
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vm.uefi_vars}"]
    if vm.disk is not None:
        fmt = "raw" if vm.disk.suffix in (".raw", ".img") else "qcow2"
        argv += ["-drive", f"file={vm.disk},if=none,id=disk0,format={fmt}",
                 "-device", f"virtio-blk-pci,drive=disk0{disk_index}" + (
                     f",serial={vm.disk_serial}" if vm.disk_serial else "")]
    argv += list(vm.extra_args)
    return argv


def vm_command(vm: VmSpec) -> list[str]:
    """What start_vm runs: QEMU's command line, inside the machine's network namespace if it has one. Pure."""
    if vm.netns is None:
        return qemu_argv(vm)
    if not vm.netdev.startswith("tap:"):
        raise InputError(f"VM {vm.name}: a network namespace needs a tap netdev, got {vm.netdev!r}")
    return ["ip", "netns", "exec", vm.netns, *qemu_argv(vm)]


def start_vm(vm: VmSpec) -> Process[bytes]:
    """Start the machine in its own process group; the caller owns stopping it (run.kill_group)."""
    require(QEMU_BINARY, "qemu-system-x86")
    if vm.firmware == "uefi":
        if not OVMF_CODE.exists() or not OVMF_VARS.exists():
            raise ToolMissingError(f"{OVMF_CODE} not found.", hint="install it: apt-get install ovmf")
        assert vm.uefi_vars is not None
        if vm.secure_boot and not (OVMF_CODE_SECBOOT.exists() and vm.uefi_vars.exists()):
            raise ToolMissingError(f"VM {vm.name}: {OVMF_CODE_SECBOOT} or the enrolled {vm.uefi_vars} is missing",
                                   hint="install ovmf; golden lab up --secure-boot enrols the variable store")
        if not vm.uefi_vars.exists():
            vm.uefi_vars.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(OVMF_VARS, vm.uefi_vars)
    elif vm.boot_network and not (IPXE_ROM_DIR / IPXE_VIRTIO_ROM).exists():
        rom = IPXE_ROM_DIR / IPXE_VIRTIO_ROM
        raise ToolMissingError(f"{rom} not found.", hint="install it: apt-get install ipxe-qemu")
    vm.serial_log.parent.mkdir(parents=True, exist_ok=True)
    if vm.console_socket:
        console_socket_path(vm).unlink(missing_ok=True)  # a killed QEMU leaves its socket behind
    return spawn(vm_command(vm), cwd=vm.serial_log.parent if vm.console_socket else None)
