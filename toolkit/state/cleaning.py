"""Hosts being retired: the ``host_cleaning`` marks (cleaning, clean, clean-failed) and their disk reports.

A row exists from the moment ``golden retire`` takes a host until someone clears it
(``golden retire --clear``, audited by the caller). While its state is ``cleaning`` or
``clean-failed`` the host is never given a build; ``clean`` means its last cleaning report said
every disk was erased and verified. The per-disk report is kept here and in the audit history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from toolkit.state.room import Room


@dataclass(frozen=True)
class CleaningRow:
    """A host's cleaning mark: its state, since when, the attempt, why, and the last disk report."""

    host: str
    state: str  # cleaning | clean | clean-failed (HostState values)
    since: float
    attempt: str
    reason: str
    disks: tuple[dict[str, Any], ...]


def _row(r: Any) -> CleaningRow:
    return CleaningRow(r["host"], r["state"], r["since"], r["attempt"], r["reason"], tuple(json.loads(r["disks"])))


class CleaningRoom(Room):
    """The ``host_cleaning`` queries."""

    def set_cleaning(self, host: str, state: str, at: float, attempt: str = "", reason: str = "",
                     disks: list[dict[str, Any]] | None = None) -> None:
        """Set (or replace) the host's cleaning mark."""
        self._c.execute("DELETE FROM host_cleaning WHERE host = ?", (host,))
        self._c.execute("INSERT INTO host_cleaning (host, state, since, attempt, reason, disks) VALUES (?,?,?,?,?,?)",
                        (host, state, at, attempt, reason, json.dumps(disks or [])))

    def get_cleaning(self, host: str) -> CleaningRow | None:
        """The host's cleaning mark, or None for a host that is not being retired."""
        r = self._c.execute("SELECT * FROM host_cleaning WHERE host = ?", (host,)).fetchone()
        return _row(r) if r else None

    def all_cleaning(self) -> dict[str, CleaningRow]:
        """Every host's cleaning mark, by host."""
        return {r["host"]: _row(r) for r in self._c.execute("SELECT * FROM host_cleaning").fetchall()}

    def clear_cleaning(self, host: str) -> bool:
        """Remove the host's mark; False when it had none."""
        return self._c.execute("DELETE FROM host_cleaning WHERE host = ?", (host,)).rowcount > 0
