"""The UKI's layout: PE headers read from Debian's real systemd-stub, sections placed after it, the rootfs hash
archive appended to the initrd (pure parts of toolkit.bake.uki; objcopy and sbsign: tests/integration/test_uki.py)."""

from __future__ import annotations

import struct
import subprocess

import pytest

from toolkit.bake.uki import (
    PAGE,
    ROOTFS_HASH_PATH,
    STUB,
    PeLayout,
    initrd_with_hash,
    pe_layout,
    place_sections,
    rootfs_hash_cpio,
)

SHA = "ab" * 32

def test_layout_of_the_real_stub_matches_objdump() -> None:
    layout = pe_layout(STUB.read_bytes())
    out = subprocess.run(["objdump", "-h", str(STUB)], capture_output=True, text=True, check=True).stdout
    rows = [r for r in (ln.split() for ln in out.splitlines()) if len(r) == 7 and r[0].isdigit()]
    names = tuple(r[1] for r in rows)
    end = max(int(r[3], 16) + int(r[2], 16) for r in rows)  # VMA + size; objdump's VMA includes the image base
    assert layout.sections == names and ".sdmagic" in names
    assert layout.image_base + layout.end == end
    assert layout.section_alignment in (512, 4096)


def test_new_sections_start_past_the_stub_page_aligned_and_do_not_overlap() -> None:
    layout = pe_layout(STUB.read_bytes())
    placed = place_sections(layout, [(".initrd", 5000), (".linux", 9000)])
    (n1, a1), (n2, a2) = placed
    assert (n1, n2) == (".initrd", ".linux")  # the kernel last: it may grow into what follows while decompressing
    assert a1 - layout.image_base >= layout.end and a1 % PAGE == 0 and a2 % PAGE == 0
    assert a1 - layout.image_base - layout.end < PAGE
    assert a2 == a1 + 8192  # 5000 bytes rounded up to pages


def test_placement_keeps_the_image_base() -> None:
    layout = PeLayout(image_base=0x10000000, section_alignment=0x200, end=0x19134, sections=(".text",))
    assert place_sections(layout, [(".initrd", 1)]) == [(".initrd", 0x1001A000)]


def test_a_section_the_stub_has_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\.text"):
        place_sections(PeLayout(0, 0x200, 0x1000, (".text",)), [(".text", 10)])


@pytest.mark.parametrize("data, why", [
    (b"", "MZ"),
    (b"MZ" + b"\0" * 0x3A + struct.pack("<I", 0x40) + b"XX\0\0", "PE signature"),
    (b"MZ" + b"\0" * 0x3A + struct.pack("<I", 0x40) + b"PE\0\0" + b"\0" * 20 + struct.pack("<H", 0x10B),
     "PE32+"),
])
def test_not_a_pe32plus_image(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        pe_layout(data + b"\0" * 64)


def _entries(archive: bytes) -> list[tuple[str, int, bytes]]:
    """(name, mode, data) of each newc entry: a reader independent of the writer's helpers."""
    out, pos = [], 0
    while True:
        assert archive[pos:pos + 6] == b"070701"
        fields = [int(archive[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize, mode = fields[11], fields[6], fields[1]
        name = archive[pos + 110: pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) // 4 * 4
        data = archive[pos:pos + filesize]
        pos = (pos + filesize + 3) // 4 * 4
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, data))


def test_hash_archive_holds_the_hash_file() -> None:
    archive = rootfs_hash_cpio(SHA)
    assert _entries(archive) == [("golden", 0o040755, b""), (ROOTFS_HASH_PATH, 0o100444, f"{SHA}\n".encode())]
    assert len(archive) % 512 == 0


def test_hash_archive_is_readable_by_cpio(tmp_path) -> None:
    res = subprocess.run(["cpio", "-t"], input=rootfs_hash_cpio(SHA), capture_output=True, check=True)
    assert res.stdout.decode().split() == ["golden", ROOTFS_HASH_PATH]


@pytest.mark.parametrize("bad", ["AB" * 32, "ab" * 31, "g" * 64, ""])
def test_hash_must_be_a_lowercase_sha256(bad: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        rootfs_hash_cpio(bad)


@pytest.mark.parametrize("size", [0, 1, 3, 4, 4097])
def test_archive_follows_the_initrd_on_a_four_byte_boundary(size: int) -> None:
    initrd = b"\x07" * size
    joined = initrd_with_hash(initrd, SHA)
    start = joined.index(b"070701")
    assert joined[:size] == initrd and start % 4 == 0 and set(joined[size:start]) <= {0}
    assert joined[start:] == rootfs_hash_cpio(SHA)
