"""A/B slot bookkeeping of a disk host: which slot runs, which one the next install writes.

A small state machine, pure. The machine runs its ``active`` slot; an install writes the other
(``inactive``) one and boots it with a boot counter (``trying``); the new slot's health checks then
either bless it (it becomes active) or fail, and the counter hands the machine back to the slot it
ran before (a fall-back: the failed build is remembered, and the slot it sits in is the next to be
written). A rollback swaps the running slot for the other one, which must hold a build that has not
failed. A machine with no known slot state writes slot A.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from toolkit.core.errors import InputError


class Slot(StrEnum):
    """One of the two root slots."""
    A = "a"
    B = "b"


class SlotError(InputError):
    """A slot step that cannot happen from this state (a rollback with nothing to roll back to, ...)."""


def other(slot: Slot) -> Slot:
    """The slot that is not ``slot``."""
    return Slot.B if slot == Slot.A else Slot.A


def target_slot(active: Slot | None) -> Slot:
    """The slot an install writes: A on a machine with no known active slot, else the inactive one."""
    return Slot.A if active is None else other(active)


@dataclass(frozen=True)
class SlotState:
    """What one disk host's slots hold and which one it runs."""
    active: Slot | None = None  # the blessed slot the machine boots; None: never installed (or none survived)
    a: str | None = None  # build id in slot A
    b: str | None = None  # build id in slot B
    trying: Slot | None = None  # written and booting under the counter, not yet blessed
    fell_back: str | None = None  # the build whose boot failed last, until another install is blessed

    @property
    def inactive(self) -> Slot:
        """The slot the next install writes."""
        return target_slot(self.active)

    def build(self, slot: Slot) -> str | None:
        """The build id in ``slot``, or None."""
        return self.a if slot == Slot.A else self.b


def installed(state: SlotState, build: str) -> SlotState:
    """``build`` written to the inactive slot, which now boots under the counter."""
    slot = state.inactive
    if slot == Slot.A:
        return dataclasses.replace(state, a=build, trying=slot)
    return dataclasses.replace(state, b=build, trying=slot)


def blessed(state: SlotState) -> SlotState:
    """The slot being tried passed its checks: it is the active slot now, the old one inactive."""
    if state.trying is None:
        raise SlotError("no slot is being tried: there is nothing to bless")
    return dataclasses.replace(state, active=state.trying, trying=None, fell_back=None)


def fell_back(state: SlotState) -> SlotState:
    """The slot being tried failed (or never came up): the machine is back on its active slot, and
    the failed build is recorded. With no active slot (a first install) nothing is left to boot."""
    if state.trying is None:
        raise SlotError("no slot is being tried: there is nothing to fall back from")
    return dataclasses.replace(state, trying=None, fell_back=state.build(state.trying))


def rolled_back(state: SlotState) -> SlotState:
    """The machine swapped to its other slot without a download; SlotError when that slot holds no
    build, holds the build that failed, or an install is still being tried."""
    if state.active is None or state.trying is not None:
        raise SlotError("a rollback needs a running slot and no install being tried")
    back = other(state.active)
    build = state.build(back)
    if build is None:
        raise SlotError(f"slot {back.value} holds no build to roll back to")
    if build == state.fell_back:
        raise SlotError(f"slot {back.value} holds build {build}, whose boot failed: not a rollback target")
    return dataclasses.replace(state, active=back)


def reported(state: SlotState, running: Slot, build: str) -> SlotState:
    """What a verified agent report from ``running`` (holding ``build``) says: that slot came up and is
    the machine's active slot. When another slot was being tried, its boot failed and the counter
    brought the machine back here: a fall-back, and the tried build is recorded as failed."""
    if state.trying is None:
        failed = state.fell_back  # an ordinary boot of the running slot changes no verdict
    else:
        failed = None if state.trying == running else state.build(state.trying)
    held = {"a": build} if running == Slot.A else {"b": build}
    return dataclasses.replace(state, active=running, trying=None, fell_back=failed, **held)
