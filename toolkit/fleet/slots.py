"""Disk hosts' A/B slots as the fleet knows them: the state layer's rows read as ``SlotState``."""

from __future__ import annotations

from toolkit.install.slots import Slot, SlotState
from toolkit.state.db import StateDB
from toolkit.state.slots import SlotRow


def _slot(value: str | None) -> Slot | None:
    return None if value is None else Slot(value)


def _letter(slot: Slot | None) -> str | None:
    return None if slot is None else slot.value


def state_of(row: SlotRow) -> SlotState:
    """The slot state a stored row says."""
    return SlotState(active=_slot(row.active), a=row.slot_a, b=row.slot_b, trying=_slot(row.trying),
                     fell_back=row.fell_back)


def row_of(host: str, state: SlotState, at: float) -> SlotRow:
    """The row that stores ``state`` for ``host``."""
    return SlotRow(host, _letter(state.active), state.a, state.b, _letter(state.trying), state.fell_back, at)


def slot_states(db: StateDB) -> dict[str, SlotState]:
    """Every disk host's known slot state, by host (a host missing here writes slot A next)."""
    with db.read() as repo:
        return {host: state_of(row) for host, row in repo.all_slots().items()}
