"""The reimage journal: every transition is written (and committed) before it is acted on.

A run is a plan plus an append-only list of host steps in the state database. An "intent"
row is committed before the BMC is touched and a "done" row after, so a controller killed at
any moment leaves enough on disk for ``golden reimage --resume`` to decide, per host, what
already happened and what did not.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from toolkit.runs.ids import new_run_id
from toolkit.state.db import NewStep, RunRow, StateDB, StepRow


class RunStatus(StrEnum):
    """Where a reimage run stands."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Step(StrEnum):
    """A step of reimaging one host."""
    DRAIN = "drain"              # the operators' drain playbooks: out of rotation (before any BMC call)
    DESIRED = "set-desired"      # fleet desired build <- target (or previous, on rollback)
    BOOTDEV = "bootdev-pxe"      # one-time network boot
    POWER = "power-cycle"        # cycle (or on when off)
    REPORT = "await-report"      # agent report with the expected build and a valid token
    CHECKS = "health-checks"     # the image's boot-stage checks
    VERIFY = "verify"            # the operators' verify playbooks: the service answers from outside
    UNDRAIN = "undrain"          # the operators' undrain playbooks: back in rotation (only after verify)
    HOST = "host"                # the host's outcome: done / failed / rolled-back


# The order of a host's steps in one attempt (HOST ends it); resume and the executor both read it here.
ATTEMPT_STEPS: tuple[Step, ...] = (Step.DRAIN, Step.DESIRED, Step.BOOTDEV, Step.POWER, Step.REPORT, Step.CHECKS,
                                   Step.VERIFY, Step.UNDRAIN)


class Phase(StrEnum):
    """A step's journal phase: intended, done or failed."""
    INTENT = "intent"
    DONE = "done"
    FAILED = "failed"


def new_reimage_run_id() -> str:
    """A fresh reimage run id."""
    return new_run_id("reimage")


class Journal:
    """The reimage journal of one state database; every method is one committed transaction."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def create_run(self, run_id: str, user: str, pattern: str, image: str, target: str,
                   plan: dict[str, Any]) -> None:
        """Record a new run with its plan, status "running"."""
        with self.db.write() as repo:
            repo.create_run(run_id, time.time(), user, pattern, image, target, plan, RunStatus.RUNNING.value)

    def set_status(self, run_id: str, status: RunStatus, summary: str = "") -> None:
        """Set the run's status and summary."""
        with self.db.write() as repo:
            repo.set_run_status(run_id, status.value, summary, time.time())

    def record(self, run_id: str, host: str, wave: int, attempt: int, step: Step, phase: Phase,
               detail: str = "") -> StepRow:
        """Append one step of one host; the row as written."""
        now = time.time()
        with self.db.write() as repo:
            (rid,) = repo.record_steps(run_id, [NewStep(host, wave, attempt, step.value, phase.value, detail)], now)
        return StepRow(rid, run_id, host, wave, attempt, step.value, phase.value, now, detail)

    def record_many(self, run_id: str, rows: list[tuple[str, int, int, Step, Phase, str]]) -> float:
        """Write many (host, wave, attempt, step, phase, detail) rows in one transaction; return its time."""
        now = time.time()
        if not rows:
            return now
        with self.db.write() as repo:
            repo.record_steps(run_id, [NewStep(h, w, a, s.value, p.value, d) for h, w, a, s, p, d in rows], now)
        return now

    def get_run(self, run_id: str) -> RunRow | None:
        """The run, or None."""
        with self.db.read() as repo:
            return repo.get_run(run_id)

    def runs(self, limit: int = 50) -> list[RunRow]:
        """The newest runs first."""
        with self.db.read() as repo:
            return repo.list_runs(limit)

    def steps(self, run_id: str, host: str | None = None) -> list[StepRow]:
        """The run's steps in order, of one host or all."""
        with self.db.read() as repo:
            return repo.run_steps(run_id, host)
