"""Hardware facts per host, with history, and the ``hw-changed`` marks.

``host_hardware`` keeps one row per distinct machine (by the facts' digest) a host has been seen
as: a new row only when the machine changed, so the table grows with replaced DIMMs and disks,
not with boots. ``hw_marks`` holds the hosts whose latest change nobody has accepted yet, with
the lines of that change; ``golden hw --accept`` clears a mark (audited by the caller).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from toolkit.state.room import Room


@dataclass(frozen=True)
class HardwareRow:
    """One machine a host was seen as: its facts, when first and last, and the build it ran."""

    id: int
    host: str
    digest: str
    facts: dict[str, Any]
    first_seen: float
    last_seen: float
    build_id: str
    changes: tuple[str, ...]  # from the previous row of this host; () for the first


@dataclass(frozen=True)
class HwMark:
    """A host whose hardware changed and nobody accepted it yet."""

    host: str
    since: float
    changes: tuple[str, ...]


def _row(r: Any) -> HardwareRow:
    return HardwareRow(int(r["id"]), r["host"], r["digest"], json.loads(r["facts"]), r["first_seen"],
                       r["last_seen"], r["build_id"], tuple(json.loads(r["changes"])))


class HardwareRoom(Room):
    """The ``host_hardware`` and ``hw_marks`` queries."""

    def latest_hardware(self, host: str) -> HardwareRow | None:
        """The machine ``host`` was last seen as, or None before its first report with facts."""
        r = self._c.execute("SELECT * FROM host_hardware WHERE host = ? ORDER BY id DESC LIMIT 1", (host,)).fetchone()
        return _row(r) if r else None

    def all_latest_hardware(self) -> list[HardwareRow]:
        """Every host's latest row, by host name."""
        rows = self._c.execute("SELECT * FROM host_hardware h WHERE id = (SELECT MAX(id) FROM host_hardware "
                               "WHERE host = h.host) ORDER BY host").fetchall()
        return [_row(r) for r in rows]

    def hardware_history(self, host: str) -> list[HardwareRow]:
        """Every machine ``host`` has been seen as, oldest first."""
        return [_row(r) for r in self._c.execute("SELECT * FROM host_hardware WHERE host = ? ORDER BY id",
                                                 (host,)).fetchall()]

    def add_hardware(self, host: str, digest: str, facts: dict[str, Any], at: float, build_id: str,
                     changes: list[str]) -> None:
        """A new machine for ``host`` (its first, or a changed one)."""
        self._c.execute("INSERT INTO host_hardware (host, digest, facts, first_seen, last_seen, build_id, changes) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (host, digest, json.dumps(facts, sort_keys=True), at, at, build_id, json.dumps(changes)))

    def touch_hardware(self, row_id: int, facts: dict[str, Any], at: float, build_id: str) -> None:
        """The same machine seen again: its volatile facts (links, neighbours) and last-seen time updated."""
        self._c.execute("UPDATE host_hardware SET facts = ?, last_seen = ?, build_id = ? WHERE id = ?",
                        (json.dumps(facts, sort_keys=True), at, build_id, row_id))

    def mark_hw_changed(self, host: str, at: float, changes: list[str]) -> None:
        """Mark ``host`` hw-changed with these lines (added to an unaccepted earlier change's)."""
        old = self.hw_mark(host)
        lines = [*(old.changes if old else ()), *changes]
        self._c.execute("INSERT INTO hw_marks (host, since, changes) VALUES (?, ?, ?) ON CONFLICT (host) "
                        "DO UPDATE SET changes = excluded.changes", (host, at, json.dumps(lines)))

    def hw_mark(self, host: str) -> HwMark | None:
        """The host's unaccepted hardware change, if any."""
        r = self._c.execute("SELECT * FROM hw_marks WHERE host = ?", (host,)).fetchone()
        return HwMark(r["host"], r["since"], tuple(json.loads(r["changes"]))) if r else None

    def hw_marks(self) -> dict[str, HwMark]:
        """Every unaccepted hardware change, by host."""
        return {r["host"]: HwMark(r["host"], r["since"], tuple(json.loads(r["changes"])))
                for r in self._c.execute("SELECT * FROM hw_marks").fetchall()}

    def clear_hw_mark(self, host: str) -> bool:
        """Accept a host's hardware change; True when it had one."""
        return bool(self._c.execute("DELETE FROM hw_marks WHERE host = ?", (host,)).rowcount > 0)
