"""A/B slot bookkeeping as tables: after each step, which slot runs, which one the next install writes,
what each slot holds; after a fall-back and after a rollback; and the steps that cannot happen."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from toolkit.install.slots import (
    Slot,
    SlotError,
    SlotState,
    blessed,
    fell_back,
    installed,
    reported,
    rolled_back,
    target_slot,
)

A, B = Slot.A, Slot.B


def test_the_target_slot_is_a_when_unknown_else_the_other_one() -> None:
    assert [target_slot(None), target_slot(A), target_slot(B)] == [A, B, A]


def _step(word: str) -> Callable[[SlotState], SlotState]:
    if word.startswith("install "):
        return lambda s: installed(s, word.removeprefix("install "))
    return {"bless": blessed, "fall-back": fell_back, "rollback": rolled_back}[word]


# (id, steps, then: (active, inactive, slot a, slot b, trying, fell_back))
CASES = [
    ("fresh", [], (None, A, None, None, None, None)),
    ("first-install-tried", ["install v1"], (None, A, "v1", None, A, None)),
    ("first-install-blessed", ["install v1", "bless"], (A, B, "v1", None, None, None)),
    ("second-install-goes-to-b", ["install v1", "bless", "install v2"], (A, B, "v1", "v2", B, None)),
    ("second-blessed", ["install v1", "bless", "install v2", "bless"], (B, A, "v1", "v2", None, None)),
    ("third-overwrites-a", ["install v1", "bless", "install v2", "bless", "install v3"],
     (B, A, "v3", "v2", A, None)),
    ("third-falls-back-to-b", ["install v1", "bless", "install v2", "bless", "install v3", "fall-back"],
     (B, A, "v3", "v2", None, "v3")),
    ("after-fall-back-the-failed-slot-is-written-next",
     ["install v1", "bless", "install v2", "bless", "install v3", "fall-back", "install v4"],
     (B, A, "v4", "v2", A, "v3")),
    ("a-blessed-install-clears-the-fall-back",
     ["install v1", "bless", "install v2", "bless", "install v3", "fall-back", "install v4", "bless"],
     (A, B, "v4", "v2", None, None)),
    ("rollback-swaps-without-writing", ["install v1", "bless", "install v2", "bless", "rollback"],
     (A, B, "v1", "v2", None, None)),
    ("rollback-and-back", ["install v1", "bless", "install v2", "bless", "rollback", "rollback"],
     (B, A, "v1", "v2", None, None)),
    ("after-rollback-the-next-install-overwrites-the-newer-build",
     ["install v1", "bless", "install v2", "bless", "rollback", "install v3"], (A, B, "v1", "v3", B, None)),
    ("a-first-install-that-fails-leaves-nothing-running", ["install v1", "fall-back"],
     (None, A, "v1", None, None, "v1")),
    ("reinstalling-the-same-build-is-a-new-try", ["install v1", "bless", "install v1"], (A, B, "v1", "v1", B, None)),
]


@pytest.mark.parametrize(("steps", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_slots_after_each_sequence(steps: list[str], expected: tuple) -> None:
    state = SlotState()
    for word in steps:
        state = _step(word)(state)
    assert (state.active, state.inactive, state.a, state.b, state.trying, state.fell_back) == expected


# (id, steps, the step that is refused, substring of its message)
REFUSED = [
    ("bless-with-nothing-tried", [], "bless", "nothing to bless"),
    ("bless-twice", ["install v1", "bless"], "bless", "nothing to bless"),
    ("fall-back-with-nothing-tried", ["install v1", "bless"], "fall-back", "nothing to fall back from"),
    ("rollback-on-a-fresh-disk", [], "rollback", "needs a running slot"),
    ("rollback-while-trying", ["install v1", "bless", "install v2"], "rollback", "no install being tried"),
    ("rollback-to-an-empty-slot", ["install v1", "bless"], "rollback", "slot b holds no build"),
    ("rollback-to-the-failed-build", ["install v1", "bless", "install v2", "bless", "install v3", "fall-back"],
     "rollback", "slot a holds build v3, whose boot failed"),
]


@pytest.mark.parametrize(("steps", "step", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_steps_that_cannot_happen_are_refused(steps: list[str], step: str, message: str) -> None:
    state = SlotState()
    for word in steps:
        state = _step(word)(state)
    with pytest.raises(SlotError, match=message) as info:
        _step(step)(state)
    assert info.value.exit_code == 2


# (id, steps, the report (slot, build), then: (active, slot a, slot b, trying, fell_back))
REPORTS = [
    ("first-install-comes-up", ["install v1"], (A, "v1"), (A, "v1", None, None, None)),
    ("second-install-comes-up", ["install v1", "bless", "install v2"], (B, "v2"), (B, "v1", "v2", None, None)),
    ("the-old-slot-reports-while-b-was-tried", ["install v1", "bless", "install v2"], (A, "v1"),
     (A, "v1", "v2", None, "v2")),
    ("an-ordinary-reboot-keeps-the-fall-back", ["install v1", "bless", "install v2", "fall-back"], (A, "v1"),
     (A, "v1", "v2", None, "v2")),
    ("a-host-golden-never-saw-install", [], (B, "v9"), (B, None, "v9", None, None)),
    ("the-slot-holds-what-it-reports", ["install v1", "bless"], (A, "v1-rebuilt"), (A, "v1-rebuilt", None, None, None)),
]


@pytest.mark.parametrize(("steps", "report", "expected"), [r[1:] for r in REPORTS], ids=[r[0] for r in REPORTS])
def test_a_slots_report(steps: list[str], report: tuple[Slot, str], expected: tuple) -> None:
    state = SlotState()
    for word in steps:
        state = _step(word)(state)
    state = reported(state, *report)
    assert (state.active, state.a, state.b, state.trying, state.fell_back) == expected
