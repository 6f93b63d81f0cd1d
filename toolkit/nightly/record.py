"""Where nightly runs are kept: ``<runs_dir>/<ts>-nightly-<hex>/`` with ``status`` and, once done,
``report.json``, ``report.md`` and ``report.html`` (each written aside and renamed into place)."""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.core.errors import InputError
from toolkit.core.fsutil import atomic_write
from toolkit.nightly.report import NightlyReport, from_dict, render_html, render_markdown, to_json
from toolkit.runs.ids import new_run_id
from toolkit.runs.record import NightlyRunSummary, list_nightly_runs


def new_nightly_run_id() -> str:
    """A fresh nightly run id."""
    return new_run_id("nightly")


def start_record(runs_dir: Path, run_id: str) -> Path:
    """Create the run's record folder, status "running"."""
    path = runs_dir / run_id
    path.mkdir(parents=True)
    atomic_write(path / "status", "running\n", fsync=False)
    return path


def write_report(path: Path, report: NightlyReport) -> None:
    """Write the report as JSON, Markdown and HTML, then the final status."""
    atomic_write(path / "report.json", to_json(report), fsync=False)
    atomic_write(path / "report.md", render_markdown(report), fsync=False)
    atomic_write(path / "report.html", render_html(report), fsync=False)
    atomic_write(path / "status", report.status + "\n", fsync=False)


def last_success_at(runs_dir: Path) -> float | None:
    """When the newest nightly that succeeded started (None: none did)."""
    return next((r.started_at for r in list_nightly_runs(runs_dir, 200) if r.status == "succeeded"), None)


def last_report(runs_dir: Path) -> tuple[NightlyRunSummary, NightlyReport | None]:
    """The newest nightly run and its report (None while it still runs, or when it was killed)."""
    runs = list_nightly_runs(runs_dir, 1)
    if not runs:
        raise InputError(f"no nightly run in {runs_dir}", hint="run one: golden nightly")
    run = runs[0]
    path = run.path / "report.json"
    if not path.is_file():
        return run, None
    try:
        return run, from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a nightly report ({exc})") from None
