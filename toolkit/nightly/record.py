"""Where nightly runs are kept: ``<runs_dir>/<ts>-nightly-<hex>/`` with ``status`` and, once done,
``report.json``, ``report.md`` and ``report.html`` (each written aside and renamed into place)."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from toolkit.core.errors import InputError
from toolkit.core.fsutil import atomic_write
from toolkit.nightly.report import NightlyReport, from_dict, render_html, render_markdown, to_json

NIGHTLY_RUN_RE = re.compile(r"^(\d{8}T\d{6}Z)-nightly-[0-9a-f]{6}$")


def new_nightly_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-nightly-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class NightlyRunSummary:
    id: str
    started_at: float
    status: str
    summary: str
    path: Path


def start_record(runs_dir: Path, run_id: str) -> Path:
    path = runs_dir / run_id
    path.mkdir(parents=True)
    atomic_write(path / "status", "running\n", fsync=False)
    return path


def write_report(path: Path, report: NightlyReport) -> None:
    atomic_write(path / "report.json", to_json(report), fsync=False)
    atomic_write(path / "report.md", render_markdown(report), fsync=False)
    atomic_write(path / "report.html", render_html(report), fsync=False)
    atomic_write(path / "status", report.status + "\n", fsync=False)


def read_nightly_run(path: Path) -> NightlyRunSummary | None:
    m = NIGHTLY_RUN_RE.match(path.name)
    if m is None or not path.is_dir():
        return None
    started = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    try:
        status = (path / "status").read_text().strip()
    except OSError:
        status = "unknown"
    summary = ""
    if (path / "report.json").is_file():
        try:
            summary = str(json.loads((path / "report.json").read_text()).get("summary", ""))
        except ValueError:
            summary = "(unreadable report)"
    return NightlyRunSummary(path.name, started, status, summary, path)


def list_nightly_runs(runs_dir: Path, limit: int = 50) -> list[NightlyRunSummary]:
    if not runs_dir.is_dir():
        return []
    found = [r for p in runs_dir.iterdir() if (r := read_nightly_run(p)) is not None]
    return sorted(found, key=lambda r: r.id, reverse=True)[:limit]


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
