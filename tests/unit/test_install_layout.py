"""Disk layout settings and the GPT plan, as tables: sizes, a too-small disk, a missing disk, a named disk."""

from __future__ import annotations

import itertools

import pytest

from toolkit.core.errors import InputError
from toolkit.install.layout import (
    ALIGN,
    DATA_LABEL,
    ESP_TYPE,
    MIN_DATA_BYTES,
    ROOT_X86_64_TYPE,
    Disk,
    LayoutError,
    plan_layout,
    required_bytes,
)
from toolkit.install.settings import MIB, DiskSettings, check_device, check_mount, parse_size, show_size
from toolkit.install.slots import Slot

GIB = 1 << 30


@pytest.mark.parametrize(("text", "expected"), [
    ("512M", 512 * MIB), ("512MiB", 512 * MIB), ("512MB", 512 * MIB), ("8G", 8 * GIB), ("8gib", 8 * GIB),
    ("1T", 1 << 40), ("64K", 64 << 10), (" 4G ", 4 * GIB),
])
def test_sizes_read_in_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["4096", "4.5G", "-1G", "G", "4X", "4 GB extra", ""])
def test_a_size_without_a_unit_or_with_a_bad_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size like 512M or 8G"):
        parse_size(text)


@pytest.mark.parametrize(("n", "shown"), [(512 * MIB, "512M"), (8 * GIB, "8G"), (1 << 40, "1T"),
                                          (1536 * MIB, "1536M"), (MIB + 1, "2M")])
def test_sizes_show_in_the_largest_unit_that_divides_them(n: int, shown: str) -> None:
    assert show_size(n) == shown


DEVICE, MOUNT = (check_device, "must be 'auto' or a device path"), (check_mount, "must be an absolute path")
# (check, text, accepted): disk_device is auto or a /dev path; disk_data_mount is absolute, off / and /boot
PATHS = [
    *[(DEVICE, text, True) for text in ("auto", "/dev/sda", "/dev/nvme0n1", "/dev/disk/by-id/wwn-0x5000")],
    *[(DEVICE, text, False) for text in ("sda", "/dev/../etc/passwd", "/tmp/disk", "/dev/sda/", "AUTO")],
    *[(MOUNT, text, True) for text in ("/var/lib/golden-data", "/srv", "/bootstrap")],
    *[(MOUNT, text, False) for text in ("/", "relative", "/boot", "/boot/efi", "/srv/../etc", "")],
]


@pytest.mark.parametrize(("check", "text", "ok"), PATHS, ids=[f"{c[0].__name__}:{t!r}" for c, t, _ in PATHS])
def test_disk_device_and_data_mount_paths(check: tuple, text: str, ok: bool) -> None:
    fn, message = check
    if ok:
        assert fn(text) == text
    else:
        with pytest.raises(ValueError, match=message):
            fn(text)


def test_the_default_layout_on_a_32g_disk() -> None:
    layout = plan_layout([Disk("vda", 32 * GIB)], DiskSettings())
    assert layout.device == "/dev/vda"
    assert [(p.number, p.label, p.start, p.size) for p in layout.partitions] == [
        (1, "esp", MIB, 512 * MIB),
        (2, "golden-a", 513 * MIB, 4 * GIB),
        (3, "golden-b", 513 * MIB + 4 * GIB, 4 * GIB),
        (4, DATA_LABEL, 513 * MIB + 8 * GIB, 32 * GIB - 513 * MIB - 8 * GIB - MIB),
    ]
    assert layout.partitions[0].type_guid == ESP_TYPE
    assert layout.slot(Slot.A).type_guid == layout.slot(Slot.B).type_guid == ROOT_X86_64_TYPE
    assert layout.slot(Slot.B).number == 3 and layout.data.number == 4
    assert layout.data.end == 32 * GIB - MIB  # the last MiB stays for GPT's backup header


def test_partitions_are_aligned_contiguous_and_inside_the_disk() -> None:
    settings = DiskSettings(esp_bytes=100 * MIB + 5, slot_bytes=3 * GIB + 1)
    layout = plan_layout([Disk("sda", 20 * GIB + 12345)], settings)
    parts = layout.partitions
    assert all(p.start % ALIGN == 0 and p.size % ALIGN == 0 for p in parts)
    assert all(a.end == b.start for a, b in itertools.pairwise(parts))
    assert parts[0].size == 101 * MIB and parts[1].size == 3 * GIB + MIB  # sizes round up, never down
    assert parts[-1].end <= layout.disk_bytes - MIB


@pytest.mark.parametrize(("disks", "device", "chosen"), [
    ([Disk("vda", 32 * GIB), Disk("vdb", 64 * GIB)], "auto", "/dev/vda"),
    ([Disk("vda", 32 * GIB), Disk("vdb", 64 * GIB)], "/dev/vdb", "/dev/vdb"),
    ([Disk("nvme0n1", 64 * GIB)], "/dev/nvme0n1", "/dev/nvme0n1"),
])
def test_the_disk_is_the_first_one_or_the_named_one(disks: list[Disk], device: str, chosen: str) -> None:
    assert plan_layout(disks, DiskSettings(device=device)).device == chosen


def test_the_smallest_disk_that_fits_fits_and_one_mib_less_does_not() -> None:
    settings = DiskSettings()
    need = required_bytes(settings)
    assert need == MIB + 512 * MIB + 8 * GIB + MIN_DATA_BYTES + MIB
    assert plan_layout([Disk("vda", need)], settings).data.size == MIN_DATA_BYTES
    with pytest.raises(LayoutError):
        plan_layout([Disk("vda", need - 1)], settings)


# (disks, settings, substrings of the one-line message)
BAD = [
    ("no-disk", [], DiskSettings(), ["the machine reports no disk to install to"]),
    ("named-disk-missing", [Disk("vda", 32 * GIB), Disk("vdb", 8 * GIB)], DiskSettings(device="/dev/sdb"),
     ["disk_device /dev/sdb is not among the machine's disks (vda, vdb)"]),
    ("too-small", [Disk("vda", 8 * GIB)], DiskSettings(),
     ["disk vda holds 8G, the layout needs at least 8962M", "ESP 512M, two slots of 4G, 256M of data"]),
    ("too-small-for-big-slots", [Disk("sda", 64 * GIB)], DiskSettings(slot_bytes=32 * GIB),
     ["disk sda holds 64G", "two slots of 32G"]),
    ("auto-picks-the-small-first-disk", [Disk("vda", 1 * GIB), Disk("vdb", 64 * GIB)], DiskSettings(),
     ["disk vda holds 1G"]),
]


@pytest.mark.parametrize(("disks", "settings", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_layout_that_cannot_be_is_one_clear_input_error(disks: list[Disk], settings: DiskSettings,
                                                          expected: list[str]) -> None:
    with pytest.raises(LayoutError) as info:
        plan_layout(disks, settings)
    assert isinstance(info.value, InputError) and info.value.exit_code == 2
    assert "\n" not in info.value.message and info.value.hint
    for needle in expected:
        assert needle in info.value.message, info.value.message
