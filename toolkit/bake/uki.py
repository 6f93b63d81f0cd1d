"""Unified Kernel Images: systemd-stub + kernel + initrd in one PE file that Secure Boot firmware verifies.

Debian 12 ships systemd-stub (package systemd-boot-efi) but no ``ukify``, so golden assembles the image
as ukify does: read the stub's PE headers, place each new section after the stub's last one at the
section alignment, and let ``objcopy`` add them. The kernel goes last (it may grow into the memory
after it while it decompresses). There is no ``.cmdline`` section: systemd 252's stub would then
ignore the command line iPXE passes under Secure Boot, and the per-boot token must come from there.
What must not be forgeable from the command line, the rootfs sha256, travels inside the signed image
instead: a small cpio appended to the initrd (Linux unpacks concatenated archives) holding
``golden/rootfs.sha256``, which the initramfs prefers over ``golden.sha256=``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.errors import BakeError
from toolkit.core.run import require, run

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
ROOTFS_HASH_PATH = "golden/rootfs.sha256"  # inside the initramfs; roles/netboot's check reads it
PAGE = 4096


@dataclass(frozen=True)
class PeLayout:
    """What placing new sections needs from a PE image's headers."""
    image_base: int
    section_alignment: int
    end: int  # the relative virtual address just past the last section
    sections: tuple[str, ...]


def pe_layout(data: bytes) -> PeLayout:
    """The layout of the PE32+ image ``data``; ValueError when it is not one. Pure."""
    if data[:2] != b"MZ" or len(data) < 0x40:
        raise ValueError("not a PE image (no MZ header)")
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        raise ValueError("not a PE image (no PE signature)")
    count, opt_size = struct.unpack_from("<H", data, pe + 6)[0], struct.unpack_from("<H", data, pe + 20)[0]
    opt = pe + 24
    if struct.unpack_from("<H", data, opt)[0] != 0x20B:
        raise ValueError("not a PE32+ (64-bit) image")
    image_base = struct.unpack_from("<Q", data, opt + 24)[0]
    alignment = struct.unpack_from("<I", data, opt + 32)[0]
    names, end = [], 0
    for i in range(count):
        sec = opt + opt_size + 40 * i
        names.append(data[sec:sec + 8].rstrip(b"\0").decode("ascii", "replace"))
        vsize, vaddr = struct.unpack_from("<II", data, sec + 8)
        end = max(end, vaddr + vsize)
    return PeLayout(image_base, alignment, end, tuple(names))


def _round_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def place_sections(layout: PeLayout, sizes: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Each new section's virtual address (objcopy's VMA: image base included), in order. Pure."""
    alignment = max(layout.section_alignment, PAGE)  # pages: what the firmware maps, as ukify does
    taken = set(layout.sections)
    placed, at = [], _round_up(layout.end, alignment)
    for name, size in sizes:
        if name in taken:
            raise ValueError(f"the stub already has a {name} section")
        placed.append((name, layout.image_base + at))
        at = _round_up(at + size, alignment)
    return placed


def _cpio_entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def rootfs_hash_cpio(sha256: str) -> bytes:
    """A newc cpio archive holding ``golden/rootfs.sha256`` (the kernel unpacks it over the initrd). Pure."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a lowercase sha256: {sha256!r}")
    body = (_cpio_entry("golden", 0o040755, b"", 1)
            + _cpio_entry(ROOTFS_HASH_PATH, 0o100444, f"{sha256}\n".encode(), 2)
            + _cpio_entry("TRAILER!!!", 0, b"", 0))
    return body + b"\0" * (-len(body) % 512)


def initrd_with_hash(initrd: bytes, sha256: str) -> bytes:
    """``initrd`` followed by the rootfs hash archive, 4-byte aligned as the kernel expects. Pure."""
    return initrd + b"\0" * (-len(initrd) % 4) + rootfs_hash_cpio(sha256)


def assemble(kernel: Path, initrd: Path, rootfs_sha256: str, dest: Path, stub: Path = STUB) -> None:
    """Write the (unsigned) UKI for ``kernel`` and ``initrd`` whose root must hash to ``rootfs_sha256``."""
    require("objcopy", "binutils")
    if not stub.is_file():
        raise BakeError(f"systemd-stub {stub} not found", hint="install it: apt-get install systemd-boot-efi")
    joined = dest.with_name(dest.name + ".initrd")
    joined.write_bytes(initrd_with_hash(initrd.read_bytes(), rootfs_sha256))
    try:
        sections = [(".initrd", joined), (".linux", kernel)]
        placed = place_sections(pe_layout(stub.read_bytes()), [(n, p.stat().st_size) for n, p in sections])
        argv: list[str] = ["objcopy"]
        for (name, path), (_, vma) in zip(sections, placed, strict=True):
            argv += ["--add-section", f"{name}={path}", "--change-section-vma", f"{name}={vma:#x}"]
        run([*argv, stub, dest], capture=True, what="objcopy (assemble the UKI)")
    finally:
        joined.unlink(missing_ok=True)
