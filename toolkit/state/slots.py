"""Disk hosts' A/B slots: the ``host_slots`` rows (``toolkit.install.slots`` decides their steps).

A row exists once a disk host's slots are known (its agent reported them, or golden recorded an
install); a host without one writes slot A next. Slot names are the letters ``a`` and ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toolkit.state.room import Room


@dataclass(frozen=True)
class SlotRow:
    """One disk host's slots as stored: the running one, the build in each, the one tried, the failed build."""
    host: str
    active: str | None
    slot_a: str | None
    slot_b: str | None
    trying: str | None
    fell_back: str | None
    at: float


def _row(r: Any) -> SlotRow:
    return SlotRow(r["host"], r["active"], r["slot_a"], r["slot_b"], r["trying"], r["fell_back"], r["at"])


class SlotsRoom(Room):
    """The ``host_slots`` queries."""

    def set_slots(self, row: SlotRow) -> None:
        """Set (or replace) the host's slot row."""
        self._c.execute("DELETE FROM host_slots WHERE host = ?", (row.host,))
        self._c.execute("INSERT INTO host_slots (host, active, slot_a, slot_b, trying, fell_back, at) "
                        "VALUES (?,?,?,?,?,?,?)",
                        (row.host, row.active, row.slot_a, row.slot_b, row.trying, row.fell_back, row.at))

    def get_slots(self, host: str) -> SlotRow | None:
        """The host's slot row, or None when its slots are not known."""
        r = self._c.execute("SELECT * FROM host_slots WHERE host = ?", (host,)).fetchone()
        return _row(r) if r else None

    def all_slots(self) -> dict[str, SlotRow]:
        """Every known host's slot row, by host."""
        return {r["host"]: _row(r) for r in self._c.execute("SELECT * FROM host_slots").fetchall()}
