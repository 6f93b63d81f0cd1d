"""The reimage journal: runs with their plans, and each host's steps."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.state.room import Room


@dataclass(frozen=True)
class StepRow:
    """One reimage journal entry: a host's step (intent, done or failed) in one attempt."""

    id: int
    run_id: str
    host: str
    wave: int
    attempt: int
    step: str
    phase: str
    at: float
    detail: str


@dataclass(frozen=True)
class RunRow:
    """One reimage run: its plan and where it stands."""

    id: str
    created_at: float
    updated_at: float
    user: str
    pattern: str
    image: str
    target_build: str
    plan: dict[str, Any]
    status: str
    summary: str


@dataclass(frozen=True)
class NewStep:
    """A journal entry to append (``record_steps``)."""

    host: str
    wave: int
    attempt: int
    step: str
    phase: str
    detail: str = ""


class Runs(Room):
    """Queries on the reimage journal."""

    def create_run(self, run_id: str, at: float, user: str, pattern: str, image: str, target_build: str,
                   plan: dict[str, Any], status: str) -> None:
        self._c.execute(
            "INSERT INTO reimage_runs (id, created_at, updated_at, \"user\", pattern, image, target_build, plan, "
            "status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, at, at, user, pattern, image, target_build, json.dumps(plan, sort_keys=True), status),
        )

    def set_run_status(self, run_id: str, status: str, summary: str, at: float) -> None:
        self._c.execute("UPDATE reimage_runs SET status = ?, summary = ?, updated_at = ? WHERE id = ?",
                        (status, summary, at, run_id))

    def record_steps(self, run_id: str, steps: Sequence[NewStep], at: float) -> list[int]:
        """Append journal entries (one transaction: the caller's); returns their ids."""
        ids = []
        for s in steps:
            cur = self._c.execute(
                "INSERT INTO reimage_steps (run_id, host, wave, attempt, step, phase, at, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (run_id, s.host, s.wave, s.attempt, s.step, s.phase, at, s.detail),
            )
            ids.append(int(cur.fetchone()["id"]))
        self._c.execute("UPDATE reimage_runs SET updated_at = ? WHERE id = ?", (at, run_id))
        return ids

    def get_run(self, run_id: str) -> RunRow | None:
        r = self._c.execute("SELECT * FROM reimage_runs WHERE id = ?", (run_id,)).fetchone()
        return _run(r) if r else None

    def list_runs(self, limit: int = 50) -> list[RunRow]:
        rows = self._c.execute("SELECT * FROM reimage_runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [_run(r) for r in rows]

    def last_step_phases(self) -> dict[str, str]:
        """Each host's most recent reimage step phase (intent, done, failed), over all runs."""
        rows = self._c.execute(
            "SELECT s.host AS host, s.phase AS phase FROM reimage_steps s JOIN "
            "(SELECT host, MAX(id) AS id FROM reimage_steps GROUP BY host) m ON s.id = m.id").fetchall()
        return {r["host"]: r["phase"] for r in rows}

    def run_steps(self, run_id: str, host: str | None = None) -> list[StepRow]:
        if host is None:
            rows = self._c.execute("SELECT * FROM reimage_steps WHERE run_id = ? ORDER BY id", (run_id,))
        else:
            rows = self._c.execute("SELECT * FROM reimage_steps WHERE run_id = ? AND host = ? ORDER BY id",
                                   (run_id, host))
        return [_step(r) for r in rows.fetchall()]


def _run(r: sqlite3.Row) -> RunRow:
    return RunRow(r["id"], r["created_at"], r["updated_at"], r["user"], r["pattern"], r["image"],
                  r["target_build"], json.loads(r["plan"]), r["status"], r["summary"])


def _step(r: sqlite3.Row) -> StepRow:
    return StepRow(r["id"], r["run_id"], r["host"], r["wave"], r["attempt"], r["step"], r["phase"], r["at"],
                   r["detail"])
