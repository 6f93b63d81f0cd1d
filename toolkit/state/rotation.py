"""Hosts out of rotation: which group budgets each drained or reimaging host holds, for which run.

One row per (host, group): a host of two hook groups holds a place in each. ``state`` is ``out``
while a run holds the host out of rotation on purpose (drained, being reimaged, being verified)
and ``left`` once a failure left it out (a failed verify after rollback, a failed drain or
undrain): it keeps its place in the budget until someone returns it (a later reimage that ends
with its undrain releases it). Every controller sharing the database sees the same rows, which
is what makes a budget hold across two controllers at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.state.room import Room


@dataclass(frozen=True)
class RotationRow:
    host: str
    grp: str
    run_id: str
    state: str  # out | left
    since: float
    detail: str


def _row(r: Any) -> RotationRow:
    return RotationRow(r["host"], r["grp"], r["run_id"], r["state"], r["since"], r["detail"])


class HostRotation(Room):
    """The ``host_rotation`` queries."""

    def rotation_rows(self, groups: Sequence[str] | None = None) -> list[RotationRow]:
        """Every row, or those of ``groups``, in (group, host) order."""
        if groups is None:
            rows = self._c.execute("SELECT * FROM host_rotation ORDER BY grp, host").fetchall()
        elif not groups:
            return []
        else:
            marks = ", ".join("?" for _ in groups)  # placeholders only: the names travel as parameters
            rows = self._c.execute(f"SELECT * FROM host_rotation WHERE grp IN ({marks}) ORDER BY grp, host",  # noqa: S608
                                   list(groups)).fetchall()
        return [_row(r) for r in rows]

    def hold_rotation(self, host: str, groups: Sequence[str], run_id: str, at: float) -> None:
        """Record ``host`` out of rotation for ``run_id`` in each group (taking over rows it already had)."""
        self._c.executemany(
            "INSERT INTO host_rotation (host, grp, run_id, state, since, detail) VALUES (?, ?, ?, 'out', ?, '') "
            "ON CONFLICT (host, grp) DO UPDATE SET run_id = excluded.run_id, state = 'out', detail = ''",
            [(host, g, run_id, at) for g in groups])

    def leave_rotation(self, host: str, detail: str, at: float) -> None:
        """A failure leaves ``host`` out of rotation: it keeps its places until someone returns it."""
        self._c.execute("UPDATE host_rotation SET state = 'left', detail = ?, since = ? WHERE host = ?",
                        (detail[:500], at, host))

    def release_rotation(self, host: str) -> int:
        """``host`` is back in rotation: it holds no budget any more."""
        return int(self._c.execute("DELETE FROM host_rotation WHERE host = ?", (host,)).rowcount)
