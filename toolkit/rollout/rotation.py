"""Group budgets held in the state database: which hosts of a wave may go out of rotation now.

``decide_admission`` is pure (rows in, decision out); ``Rotation`` reads and writes the rows in
one write transaction, so two controllers admitting hosts of one group at the same moment
cannot both take its last place. A host blocked by hosts that a live run is moving waits; a
host blocked only by hosts left out of rotation by failures (or by a run that is no longer
alive) can never go, and the run stops and says which hosts hold the budget.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from toolkit.rollout.hooks import HookPlan
from toolkit.state.db import StateDB
from toolkit.state.rotation import RotationRow


@dataclass(frozen=True)
class Blocked:
    """``host`` cannot go out now: ``group`` already has ``budget`` hosts out (``holders``)."""

    host: str
    group: str
    budget: int
    holders: tuple[RotationRow, ...]

    def describe(self) -> str:
        """One line: the group, its budget and who holds its places."""
        held = ", ".join(f"{r.host} ({'left out: ' + r.detail if r.state == 'left' else 'run ' + r.run_id})"
                         for r in self.holders)
        return f"group {self.group!r} allows {self.budget} host(s) out of rotation and has {held}"


def decide_admission(plan: HookPlan, hosts: Sequence[str], rows: Sequence[RotationRow],
                     run_id: str) -> tuple[list[str], list[Blocked]]:
    """Which of ``hosts`` may go out now, given the rows of their groups; each admitted host counts
    against the budgets of the hosts after it. A host's own rows never count against itself."""
    held: dict[str, dict[str, RotationRow]] = {}
    for r in rows:
        held.setdefault(r.grp, {})[r.host] = r
    admitted: list[str] = []
    blocked: list[Blocked] = []
    for name in hosts:
        groups = plan.groups_of(name)
        stop = next((Blocked(name, g.key, g.budget, tuple(r for h, r in sorted(held.get(g.key, {}).items())
                                                            if h != name))
                     for g in groups if g.budget is not None
                     and len([h for h in held.get(g.key, {}) if h != name]) >= g.budget), None)
        if stop is not None:
            blocked.append(stop)
            continue
        admitted.append(name)
        for g in groups:
            held.setdefault(g.key, {})[name] = RotationRow(name, g.key, run_id, "out", 0.0, "")
    return admitted, blocked


@dataclass
class Rotation:
    """The budgets of one run's hook plan, held in the state database."""

    db: StateDB
    plan: HookPlan
    run_id: str

    def tracked(self, host: str) -> bool:
        """Whether ``host`` belongs to a hook group (only those hold places)."""
        return bool(self.plan.groups_of(host))

    def admit(self, hosts: Sequence[str]) -> tuple[list[str], list[Blocked]]:
        """Take places for as many of ``hosts`` as the budgets allow (hosts of no group always go)."""
        tracked = [h for h in hosts if self.tracked(h)]
        free = [h for h in hosts if not self.tracked(h)]
        if not tracked:
            return free, []
        keys = sorted({g.key for h in tracked for g in self.plan.groups_of(h)})
        with self.db.write() as repo:
            ok, blocked = decide_admission(self.plan, tracked, repo.rotation_rows(keys), self.run_id)
            now = time.time()
            for h in ok:
                repo.hold_rotation(h, [g.key for g in self.plan.groups_of(h)], self.run_id, now)
        return free + ok, blocked

    def alive(self, row: RotationRow) -> bool:
        """Whether a live run is moving the holder (so its place will come free): its run is running
        and holds an unexpired lease on it. Rows left by failures never come free by themselves."""
        if row.state != "out" or row.run_id == self.run_id:
            return row.state == "out" and row.run_id == self.run_id
        with self.db.read() as repo:
            run = repo.get_run(row.run_id)
            leases = repo.get_leases([row.host])
        now = time.time()
        return (run is not None and run.status == "running"
                and any(le.run_id == row.run_id and le.expires_at > now for le in leases))

    def stuck(self, blocked: Sequence[Blocked]) -> list[Blocked]:
        """The blocks no live run will ever lift (every holder left out, or its run dead)."""
        return [b for b in blocked if not any(self.alive(r) for r in b.holders)]

    def leave(self, host: str, detail: str) -> None:
        """A failure left ``host`` out of rotation: it keeps its places, with why."""
        if self.tracked(host):
            with self.db.write() as repo:
                repo.leave_rotation(host, detail, time.time())

    def release(self, host: str) -> None:
        """``host`` is back in rotation: its places are free."""
        if self.tracked(host):
            with self.db.write() as repo:
                repo.release_rotation(host)
