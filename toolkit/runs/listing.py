"""``golden runs``: one list of what golden did: bake and nightly runs (run records in the home) and reimage
runs (the journal).

"runs" means one thing: a recorded operation with an id, a kind, a start, a status and a summary.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.runs.console import ConsoleTail, console_tail
from toolkit.runs.record import (
    BakeRunSummary,
    NightlyRunSummary,
    list_bake_runs,
    list_nightly_runs,
    read_bake_run,
    read_nightly_run,
)
from toolkit.state import open_state
from toolkit.state.db import RunRow, StepRow


@dataclass(frozen=True)
class RunSummary:
    """One run of any kind, as ``golden runs`` lists it."""
    id: str
    kind: str  # bake | reimage | nightly
    started_at: float
    status: str
    subject: str  # the image (bake) or image/build onto a pattern (reimage)
    summary: str


def _from_bake(r: BakeRunSummary) -> RunSummary:
    # bakes recorded before the words were unified said "successful"; every verb says "succeeded" now
    status = "succeeded" if r.status == "successful" else r.status
    return RunSummary(r.id, "bake", r.started_at, status, r.image, r.error)


def _from_nightly(r: NightlyRunSummary) -> RunSummary:
    return RunSummary(r.id, "nightly", r.started_at, r.status, "images", r.summary)


def _from_reimage(r: RunRow) -> RunSummary:
    return RunSummary(r.id, "reimage", r.created_at, r.status, f"{r.image}/{r.target_build} on {r.pattern}",
                      r.summary)


def all_runs(settings: Settings, limit: int = 50, kind: str | None = None) -> list[RunSummary]:
    """Bake, nightly and reimage runs, newest first."""
    runs: list[RunSummary] = []
    if kind in (None, "bake"):
        runs += [_from_bake(r) for r in list_bake_runs(settings.runs_dir, limit)]
    if kind in (None, "nightly"):
        runs += [_from_nightly(r) for r in list_nightly_runs(settings.runs_dir, limit)]
    if kind in (None, "reimage"):
        runs += [_from_reimage(r) for r in _reimage_runs(settings, limit)]
    return sorted(runs, key=lambda r: r.started_at, reverse=True)[:limit]


def bake_run(settings: Settings, run_id: str) -> BakeRunSummary | None:
    """The bake run record ``run_id``, or None (also for an id that is not a plain name)."""
    return read_bake_run(settings.runs_dir / run_id) if "/" not in run_id and run_id not in (".", "..") else None


def show_any(settings: Settings, run_id: str) -> tuple[BakeRunSummary | None, tuple[RunRow, list[StepRow]] | None]:
    """A bake run's record or a reimage run with its steps; InputError when there is neither."""
    bake = bake_run(settings, run_id)
    if bake is not None:
        return bake, None
    reimage = _reimage_run(settings, run_id)
    if reimage is None:
        raise InputError(f"no run {run_id!r} (neither a bake run in {settings.runs_dir} nor a reimage run)",
                         hint="list runs with: golden runs")
    return None, reimage


def run_console(settings: Settings, run_id: str, host: str) -> ConsoleTail | None:
    """The end of ``host``'s console in reimage run ``run_id`` (its last attempt), or None when none was kept."""
    if "/" in run_id or run_id in (".", ".."):
        return None
    try:
        return console_tail(settings.runs_dir, run_id, host)
    except OSError:
        return None


def nightly_run(settings: Settings, run_id: str) -> tuple[NightlyRunSummary, str | None] | None:
    """A nightly run and its Markdown report (None while it runs), or None when ``run_id`` is no nightly run."""
    if "/" in run_id or run_id in (".", ".."):
        return None
    run = read_nightly_run(settings.runs_dir / run_id)
    if run is None:
        return None
    md = run.path / "report.md"
    return run, md.read_text(encoding="utf-8", errors="replace") if md.is_file() else None


def _reimage_runs(settings: Settings, limit: int) -> list[RunRow]:
    db = open_state(settings)
    try:
        with db.read() as repo:
            return repo.list_runs(limit)
    finally:
        db.close()


def _reimage_run(settings: Settings, run_id: str) -> tuple[RunRow, list[StepRow]] | None:
    """A reimage run with its journal, or None when the state database holds no such run."""
    db = open_state(settings)
    try:
        with db.read() as repo:
            run = repo.get_run(run_id)
            return (run, repo.run_steps(run_id)) if run is not None else None
    finally:
        db.close()
