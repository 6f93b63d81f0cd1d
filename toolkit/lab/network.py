"""The lab machines' firmware and network options, checked before anything starts. Pure.

``--uefi``, ``--secure-boot``, ``--netns NS`` and ``--bridge BR`` alone and together, and the tap
each machine gets in the bridge (``toolkit.lab.machines`` creates and removes them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.core.errors import InputError

# ip-netns names become files in /run/netns; interface names are at most 15 bytes (IFNAMSIZ - 1)
NETNS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


@dataclass(frozen=True)
class LabNetwork:
    """The machines' firmware and where their NICs are: ``lab up --uefi --netns NS --bridge BR``."""
    uefi: bool = False
    netns: str | None = None
    bridge: str | None = None
    secure_boot: bool = False


def check_network(*, no_vm: bool, uefi: bool, netns: str | None, bridge: str | None,
                  secure_boot: bool = False) -> None:
    """The machines' firmware and network options, alone and together. Pure."""
    if secure_boot and not uefi:
        raise InputError("--secure-boot needs --uefi: Secure Boot is a UEFI feature", hint="add --uefi")
    if netns is not None and not NETNS_RE.match(netns):
        raise InputError(f"--netns {netns!r} is not a network namespace name",
                         hint="letters, digits, '_', '.', '-', at most 64 (see: ip netns list)")
    if bridge is not None and not IFNAME_RE.match(bridge):
        raise InputError(f"--bridge {bridge!r} is not an interface name",
                         hint="letters, digits, '_', '.', '-', at most 15 (see: ip link show type bridge)")
    used = [flag for flag, on in (("--uefi", uefi), ("--netns", netns), ("--bridge", bridge)) if on]
    if no_vm and used:
        raise InputError(f"{', '.join(used)} need QEMU machines; simulated (--no-vm) machines have no firmware "
                         "or NIC", hint=f"drop --no-vm or {' and '.join(used)}")
    if netns is not None and bridge is None:
        raise InputError("--netns needs --bridge BR: the bridge in that namespace the machines' taps join")
    if uefi and bridge is None:
        raise InputError("--uefi needs --bridge BR: QEMU's user-mode DHCP offers one boot file to every client, "
                         "so it cannot give the firmware snponly.efi and then iPXE the chain script",
                         hint="put the machines on a bridge where the proxyDHCP of 'golden pxe render' answers")


def tap_name(lab_id: str, index: int) -> str:
    """Node ``index``'s tap: unique per lab (two labs may share a bridge), within 15 bytes."""
    return f"gl{lab_id[:8]}-{index + 1:02d}"
