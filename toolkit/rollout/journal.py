"""The reimage journal: every transition is written (and committed) before it is acted on.

A run is a plan plus an append-only list of host steps in the state database. An "intent"
row is committed before the BMC is touched and a "done" row after, so a controller killed at
any moment leaves enough on disk for ``golden reimage --resume`` to decide, per host, what
already happened and what did not.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from toolkit.state.db import Migration, StateDB

MIGRATIONS = (
    Migration("0100_reimage_journal", """
        CREATE TABLE reimage_runs (
            id           TEXT PRIMARY KEY,
            created_at   REAL NOT NULL,
            updated_at   REAL NOT NULL,
            user         TEXT NOT NULL,
            pattern      TEXT NOT NULL,
            image        TEXT NOT NULL,
            target_build TEXT NOT NULL,
            plan         TEXT NOT NULL,
            status       TEXT NOT NULL,
            summary      TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE reimage_steps (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id   TEXT NOT NULL REFERENCES reimage_runs (id),
            host     TEXT NOT NULL,
            wave     INTEGER NOT NULL,
            attempt  INTEGER NOT NULL,
            step     TEXT NOT NULL,
            phase    TEXT NOT NULL,
            at       REAL NOT NULL,
            detail   TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX reimage_steps_by_run ON reimage_steps (run_id, host, id);
    """),
)


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Step(StrEnum):
    DESIRED = "set-desired"      # fleet desired build <- target (or previous, on rollback)
    BOOTDEV = "bootdev-pxe"      # one-time network boot
    POWER = "power-cycle"        # cycle (or on when off)
    REPORT = "await-report"      # agent report with the expected build and a valid token
    CHECKS = "health-checks"     # the image's boot-stage checks
    HOST = "host"                # the host's outcome: done / failed / rolled-back


class Phase(StrEnum):
    INTENT = "intent"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class StepRow:
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


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


class Journal:
    def __init__(self, db: StateDB) -> None:
        self.db = db
        db.migrate(MIGRATIONS)

    def create_run(self, run_id: str, user: str, pattern: str, image: str, target: str,
                   plan: dict[str, Any]) -> None:
        now = time.time()
        with self.db.write() as repo:
            repo.execute(
                "INSERT INTO reimage_runs (id, created_at, updated_at, user, pattern, image, target_build, plan, "
                "status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, now, now, user, pattern, image, target, json.dumps(plan, sort_keys=True),
                 RunStatus.RUNNING.value),
            )

    def set_status(self, run_id: str, status: RunStatus, summary: str = "") -> None:
        with self.db.write() as repo:
            repo.execute("UPDATE reimage_runs SET status = ?, summary = ?, updated_at = ? WHERE id = ?",
                         (status.value, summary, time.time(), run_id))

    def record(self, run_id: str, host: str, wave: int, attempt: int, step: Step, phase: Phase,
               detail: str = "") -> StepRow:
        now = time.time()
        with self.db.write() as repo:
            repo.execute(
                "INSERT INTO reimage_steps (run_id, host, wave, attempt, step, phase, at, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, host, wave, attempt, step.value, phase.value, now, detail),
            )
            rid = repo.execute("SELECT last_insert_rowid()")[0][0]
            repo.execute("UPDATE reimage_runs SET updated_at = ? WHERE id = ?", (now, run_id))
        return StepRow(int(rid), run_id, host, wave, attempt, step.value, phase.value, now, detail)

    def record_many(self, run_id: str, rows: list[tuple[str, int, int, Step, Phase, str]]) -> float:
        """Write many (host, wave, attempt, step, phase, detail) rows in one transaction; return its time."""
        now = time.time()
        if not rows:
            return now
        with self.db.write() as repo:
            for host, wave, attempt, step, phase, detail in rows:
                repo.execute(
                    "INSERT INTO reimage_steps (run_id, host, wave, attempt, step, phase, at, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, host, wave, attempt, step.value, phase.value, now, detail),
                )
            repo.execute("UPDATE reimage_runs SET updated_at = ? WHERE id = ?", (now, run_id))
        return now

    def get_run(self, run_id: str) -> RunRow | None:
        with self.db.read() as repo:
            rows = repo.execute("SELECT * FROM reimage_runs WHERE id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    def runs(self, limit: int = 50) -> list[RunRow]:
        with self.db.read() as repo:
            rows = repo.execute("SELECT * FROM reimage_runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [_run(r) for r in rows]

    def steps(self, run_id: str, host: str | None = None) -> list[StepRow]:
        q, params = "SELECT * FROM reimage_steps WHERE run_id = ?", [run_id]
        if host is not None:
            q += " AND host = ?"
            params.append(host)
        with self.db.read() as repo:
            rows = repo.execute(q + " ORDER BY id", params)
        return [StepRow(r["id"], r["run_id"], r["host"], r["wave"], r["attempt"], r["step"], r["phase"], r["at"],
                        r["detail"]) for r in rows]


def _run(r: Any) -> RunRow:
    return RunRow(r["id"], r["created_at"], r["updated_at"], r["user"], r["pattern"], r["image"],
                  r["target_build"], json.loads(r["plan"]), r["status"], r["summary"])
