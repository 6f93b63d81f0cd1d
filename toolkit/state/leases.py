"""Host leases: which controller drives which hosts, until when."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from toolkit.state.room import Room


@dataclass(frozen=True)
class LeaseRow:
    """A host leased to the controller ``holder`` driving run ``run_id``, until ``expires_at``."""

    host: str
    run_id: str
    holder: str
    acquired_at: float
    expires_at: float


class Leases(Room):
    """Queries on host leases."""

    def get_leases(self, hosts: Sequence[str]) -> list[LeaseRow]:
        if not hosts:
            return []
        marks = ", ".join("?" for _ in hosts)  # placeholders only: the names travel as parameters
        rows = self._c.execute(f"SELECT * FROM host_leases WHERE host IN ({marks}) ORDER BY host",  # noqa: S608
                               list(hosts)).fetchall()
        return [LeaseRow(r["host"], r["run_id"], r["holder"], r["acquired_at"], r["expires_at"]) for r in rows]

    def put_leases(self, hosts: Sequence[str], run_id: str, holder: str, at: float, expires_at: float) -> None:
        self._c.executemany(
            "INSERT INTO host_leases (host, run_id, holder, acquired_at, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (host) DO UPDATE SET run_id = excluded.run_id, holder = excluded.holder, "
            "acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
            [(h, run_id, holder, at, expires_at) for h in hosts])

    def renew_leases(self, holder: str, expires_at: float) -> int:
        """Extend every lease ``holder`` still has; how many that is."""
        cur = self._c.execute("UPDATE host_leases SET expires_at = ? WHERE holder = ?", (expires_at, holder))
        return int(cur.rowcount)

    def release_leases(self, holder: str) -> None:
        self._c.execute("DELETE FROM host_leases WHERE holder = ?", (holder,))
