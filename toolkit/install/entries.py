"""systemd-boot entry names with boot counting, as the Boot Loader Specification spells them.

An entry ``golden-<slot>-<build>+3.conf`` has three tries left. Each boot of it systemd-boot renames
it first (``+2-1``, ``+1-2``, ``+0-3``: tries left, tries done); at ``+0-N`` it is "bad" and sorted
after every other entry, so the machine boots the other slot. ``systemd-bless-boot good`` drops the
counter (``golden-a-<build>.conf``), ``bad`` sets tries left to 0 and keeps tries done.
A ``default`` in loader.conf matches entry ids, which include the counter, and is followed even
to a bad entry (NixOS/nixpkgs#84204): ``loader_conf`` names none. Which entry boots is then the
order: bad entries last, then (all sharing one ``sort-key``) the highest ``version``, so an install
or a rollback gives the entry to boot the next generation number (``entry_conf``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from toolkit.image.ref import BUILD_REF
from toolkit.install.slots import Slot

SUFFIX = ".conf"
_NAME = re.compile(rf"^golden-(?P<slot>[ab])-(?P<build>{BUILD_REF})(?:\+(?P<left>\d+)(?:-(?P<done>\d+))?)?\.conf$")


class EntryState(StrEnum):
    """An entry's boot-assessment state, as ``systemd-bless-boot status`` names them."""
    GOOD = "good"  # no counter: blessed (or never counted)
    INDETERMINATE = "indeterminate"  # tries left: still being tried
    BAD = "bad"  # no tries left: skipped while another entry is good or being tried


@dataclass(frozen=True)
class Entry:
    """A golden boot entry: its slot, its build and its counters (None: no counting)."""
    slot: Slot
    build: str
    left: int | None = None
    done: int = 0

    @property
    def stem(self) -> str:
        """The name without counter and suffix: ``golden-a-<build>``."""
        return slot_prefix(self.slot) + self.build

    @property
    def name(self) -> str:
        """The file name under ``loader/entries/``, ``-DONE`` left out while it is 0."""
        if self.left is None:
            return self.stem + SUFFIX
        return f"{self.stem}+{self.left}{f'-{self.done}' if self.done else ''}{SUFFIX}"

    @property
    def state(self) -> EntryState:
        """Good without a counter, bad with no tries left, indeterminate between."""
        if self.left is None:
            return EntryState.GOOD
        return EntryState.BAD if self.left == 0 else EntryState.INDETERMINATE


def slot_prefix(slot: Slot) -> str:
    """What every entry of ``slot`` starts with, whatever its build and counter: ``golden-a-``."""
    return f"golden-{slot.value}-"


def new_entry(slot: Slot, build: str, tries: int) -> Entry:
    """The entry an install writes: ``tries`` tries left, none done."""
    if not re.fullmatch(BUILD_REF, build) or tries < 1:
        raise ValueError(f"no boot entry for build {build!r} with {tries} tries")
    return Entry(slot, build, tries, 0)


def parse_entry(name: str) -> Entry | None:
    """The golden entry a file name stands for, or None when it is not one of ours."""
    m = _NAME.match(name)
    if m is None:
        return None
    left = None if m["left"] is None else int(m["left"])
    return Entry(Slot(m["slot"]), m["build"], left, int(m["done"] or 0))


def booted(entry: Entry) -> Entry:
    """The entry after systemd-boot started one boot of it: one try less, one more done
    (a bad entry booted anyway, for want of another, keeps counting the tries done)."""
    if entry.left is None:
        return entry
    return Entry(entry.slot, entry.build, max(entry.left - 1, 0), entry.done + 1)


def blessed(entry: Entry) -> Entry:
    """The entry after ``systemd-bless-boot good``: the counter dropped."""
    return Entry(entry.slot, entry.build)


def marked_bad(entry: Entry) -> Entry:
    """The entry after ``systemd-bless-boot bad``: no tries left, tries done kept."""
    if entry.left is None:
        return entry
    return Entry(entry.slot, entry.build, 0, entry.done)


def entry_dir(slot: Slot) -> str:
    """Where a slot's kernel and initrd live on the ESP: ``/golden/a``."""
    return f"/golden/{slot.value}"


def slot_word(slot: Slot) -> str:
    """The kernel command line word that tells a booted slot which one it is: ``golden.slot=a``
    (the agent reports it, ``roles/golden_agent``)."""
    return f"golden.slot={slot.value}"


def entry_conf(entry: Entry, generation: int, options: str) -> str:
    """The entry file's text: the slot's kernel and initrd, ordered by ``generation`` (highest boots),
    its command line ``options`` after the slot's own word (``slot_word``)."""
    words = " ".join((slot_word(entry.slot), options)).strip()
    return (f"title golden {entry.slot.value} {entry.build}\nsort-key golden\nversion {generation}\n"
            f"linux {entry_dir(entry.slot)}/vmlinuz\ninitrd {entry_dir(entry.slot)}/initrd\noptions {words}\n")


def loader_conf(timeout_s: int = 0) -> str:
    """loader.conf: no ``default`` (it would pin a bad entry), no editor (no kernel command line edits)."""
    return f"timeout {timeout_s}\neditor no\n"
