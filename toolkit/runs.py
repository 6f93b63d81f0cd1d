"""``golden runs``: one list of what golden did: bake and nightly runs (run records in the home) and reimage
runs (the journal).

"runs" means one thing: a recorded operation with an id, a kind, a start, a status and a summary.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.bake.record import BakeRunSummary, list_bake_runs, read_bake_run
from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.nightly.record import NightlyRunSummary, list_nightly_runs, read_nightly_run
from toolkit.rollout.service import list_runs, show_run
from toolkit.state.db import RunRow, StepRow


@dataclass(frozen=True)
class RunSummary:
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
        runs += [_from_reimage(r) for r in list_runs(settings, limit)]
    return sorted(runs, key=lambda r: r.started_at, reverse=True)[:limit]


def bake_run(settings: Settings, run_id: str) -> BakeRunSummary | None:
    return read_bake_run(settings.runs_dir / run_id) if "/" not in run_id and run_id not in (".", "..") else None


def show_any(settings: Settings, run_id: str) -> tuple[BakeRunSummary | None, tuple[RunRow, list[StepRow]] | None]:
    """A bake run's record or a reimage run with its steps; InputError when there is neither."""
    bake = bake_run(settings, run_id)
    if bake is not None:
        return bake, None
    try:
        return None, show_run(settings, run_id)
    except InputError:
        raise InputError(f"no run {run_id!r} (neither a bake run in {settings.runs_dir} nor a reimage run)",
                         hint="list runs with: golden runs") from None




def nightly_run(settings: Settings, run_id: str) -> tuple[NightlyRunSummary, str | None] | None:
    """A nightly run and its Markdown report (None while it runs), or None when ``run_id`` is no nightly run."""
    if "/" in run_id or run_id in (".", ".."):
        return None
    run = read_nightly_run(settings.runs_dir / run_id)
    if run is None:
        return None
    md = run.path / "report.md"
    return run, md.read_text(encoding="utf-8", errors="replace") if md.is_file() else None
