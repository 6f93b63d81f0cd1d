"""systemd-boot boot-counting entry names as tables, after the Boot Loader Specification's walkthrough:
a new entry, each boot's rename, bless, bad, and names that are not ours."""

from __future__ import annotations

import pytest

from toolkit.install.entries import (
    EntryState,
    blessed,
    booted,
    entry_conf,
    loader_conf,
    marked_bad,
    new_entry,
    parse_entry,
)
from toolkit.install.slots import Slot

BUILD = "d683c210a7d8b98f"


@pytest.mark.parametrize(("slot", "tries", "name"), [
    (Slot.A, 3, f"golden-a-{BUILD}+3.conf"),
    (Slot.B, 3, f"golden-b-{BUILD}+3.conf"),
    (Slot.A, 1, f"golden-a-{BUILD}+1.conf"),
    (Slot.B, 12, f"golden-b-{BUILD}+12.conf"),
])
def test_a_new_entry_has_its_tries_and_no_done_counter(slot: Slot, tries: int, name: str) -> None:
    entry = new_entry(slot, BUILD, tries)
    assert entry.name == name and entry.state == EntryState.INDETERMINATE
    assert parse_entry(name) == entry


def test_each_boot_renames_it_until_no_tries_are_left() -> None:
    """systemd-boot's series for +3: +2-1, +1-2, +0-3; a bad entry booted anyway keeps counting."""
    entry, names = new_entry(Slot.A, BUILD, 3), []
    for _ in range(5):
        entry = booted(entry)
        names.append(entry.name.removeprefix(f"golden-a-{BUILD}"))
    assert names == ["+2-1.conf", "+1-2.conf", "+0-3.conf", "+0-4.conf", "+0-5.conf"]
    assert [booted(new_entry(Slot.A, BUILD, 3)).state, entry.state] == [EntryState.INDETERMINATE, EntryState.BAD]


# (id, the file name now, what it reads after bless, after bad)
MARKS = [
    ("first-boot", f"golden-a-{BUILD}+2-1.conf", f"golden-a-{BUILD}.conf", f"golden-a-{BUILD}+0-1.conf"),
    ("second-boot", f"golden-b-{BUILD}+1-2.conf", f"golden-b-{BUILD}.conf", f"golden-b-{BUILD}+0-2.conf"),
    ("last-try", f"golden-a-{BUILD}+0-3.conf", f"golden-a-{BUILD}.conf", f"golden-a-{BUILD}+0-3.conf"),
    ("never-booted", f"golden-a-{BUILD}+3.conf", f"golden-a-{BUILD}.conf", f"golden-a-{BUILD}+0.conf"),
    ("already-good", f"golden-b-{BUILD}.conf", f"golden-b-{BUILD}.conf", f"golden-b-{BUILD}.conf"),
]


@pytest.mark.parametrize(("now", "good", "bad"), [m[1:] for m in MARKS], ids=[m[0] for m in MARKS])
def test_bless_drops_the_counter_and_bad_zeroes_tries_left(now: str, good: str, bad: str) -> None:
    entry = parse_entry(now)
    assert entry is not None and entry.name == now
    assert blessed(entry).name == good and blessed(entry).state == EntryState.GOOD
    assert marked_bad(entry).name == bad


@pytest.mark.parametrize(("name", "state"), [
    (f"golden-a-{BUILD}.conf", EntryState.GOOD), (f"golden-a-{BUILD}+1-2.conf", EntryState.INDETERMINATE),
    (f"golden-a-{BUILD}+0-3.conf", EntryState.BAD), (f"golden-a-{BUILD}+0.conf", EntryState.BAD),
])
def test_the_state_a_name_says(name: str, state: EntryState) -> None:
    entry = parse_entry(name)
    assert entry is not None and entry.state == state


@pytest.mark.parametrize("name", [
    f"golden-c-{BUILD}+3.conf",  # no slot c
    f"golden-a-{BUILD}+x.conf",  # a counter of digits only
    f"golden-a-{BUILD}+3-.conf",  # a dash needs digits after it
    f"golden-a-{BUILD}+3.efi",  # a type #2 entry is not what golden writes
    f"debian-{BUILD}+3.conf",
    "golden-a-.conf",
    "auto-windows",
])
def test_names_that_are_not_golden_entries(name: str) -> None:
    assert parse_entry(name) is None


@pytest.mark.parametrize(("build", "tries"), [("a+b", 3), ("../x", 3), ("", 3), (BUILD, 0)])
def test_no_entry_for_a_build_that_is_not_a_token_or_without_tries(build: str, tries: int) -> None:
    with pytest.raises(ValueError):
        new_entry(Slot.A, build, tries)


def test_the_entry_text_orders_by_generation_and_loader_conf_names_no_default() -> None:
    """A ``default`` would be followed even to a bad entry (NixOS/nixpkgs#84204): the order decides."""
    text = entry_conf(new_entry(Slot.B, BUILD, 3), 7, "ro console=ttyS0")
    assert text.splitlines() == [f"title golden b {BUILD}", "sort-key golden", "version 7", "linux /golden/b/vmlinuz",
                                 "initrd /golden/b/initrd", "options golden.slot=b ro console=ttyS0"]
    assert "default" not in loader_conf() and loader_conf().splitlines() == ["timeout 0", "editor no"]
