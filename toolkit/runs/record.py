"""Run records under ``<runs_dir>/<run-id>/``, in the manner of ansible-runner's artifacts, and
reading them back.

A bake writes ``command`` (what ran), ``inputs.json`` (with what), ``stdout`` (the full log),
``status`` and ``rc`` (what happened), ``error`` (the message shown to the user, when it failed).
A nightly run writes ``status`` and, once done, its reports (toolkit.nightly.record). Reimage runs
live in the state database's journal (toolkit.state.runs).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.core.fsutil import atomic_write
from toolkit.runs.ids import parse_run_id

log = logging.getLogger("golden.run")


def _write(path: Path, text: str) -> None:
    atomic_write(path, text, fsync=False)


@dataclass(frozen=True)
class RunRecord:
    """A bake's record folder: command, inputs, log, status, exit code and error."""
    path: Path

    @property
    def run_id(self) -> str:
        """The run's id (its folder's name)."""
        return self.path.name

    @property
    def stdout(self) -> Path:
        """The run's full log."""
        return self.path / "stdout"

    @classmethod
    def create(cls, runs_dir: Path, run_id: str) -> RunRecord:
        """A new record for ``run_id`` under ``runs_dir``, status "starting"."""
        path = runs_dir / run_id
        path.mkdir(parents=True)
        rec = cls(path)
        _write(path / "status", "starting\n")
        rec.stdout.touch()
        return rec

    def start(self, command: str, inputs: dict[str, Any]) -> None:
        """Record what runs and with which inputs; status "running"."""
        _write(self.path / "command", command + "\n")
        _write(self.path / "inputs.json", json.dumps(inputs, indent=2, sort_keys=True) + "\n")
        _write(self.path / "status", "running\n")

    def finish(self, status: str, rc: int | None, error: str | None = None) -> None:
        """Record the outcome; never raises (a full disk must not hide the error that ended the run)."""
        try:
            if rc is not None:
                _write(self.path / "rc", f"{rc}\n")
            if error:
                _write(self.path / "error", error + "\n")
            _write(self.path / "status", status + "\n")
        except OSError as exc:
            log.warning("could not finish the run record %s: %s", self.path, exc)

    def status(self) -> str:
        """The status as recorded now."""
        return (self.path / "status").read_text().strip()


@dataclass(frozen=True)
class BakeRunSummary:
    """A bake run as read back from its record."""
    id: str
    started_at: float
    status: str
    image: str
    error: str
    path: Path


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def read_bake_run(path: Path) -> BakeRunSummary | None:
    """A bake run's record, or None when ``path`` is not one."""
    rid = parse_run_id(path.name)
    if rid is None or rid.kind != "bake" or not rid.subject or not path.is_dir():
        return None
    return BakeRunSummary(path.name, rid.started_at, _read(path / "status") or "unknown", rid.subject,
                          _read(path / "error").splitlines()[0][:200] if (path / "error").exists() else "", path)


def list_bake_runs(runs_dir: Path, limit: int = 50) -> list[BakeRunSummary]:
    """The newest bake runs first."""
    if not runs_dir.is_dir():
        return []
    found = [r for p in runs_dir.iterdir() if (r := read_bake_run(p)) is not None]
    return sorted(found, key=lambda r: r.id, reverse=True)[:limit]


@dataclass(frozen=True)
class NightlyRunSummary:
    """A nightly run as read back from its record."""
    id: str
    started_at: float
    status: str
    summary: str
    path: Path


def read_nightly_run(path: Path) -> NightlyRunSummary | None:
    """A nightly run's record, or None when ``path`` is not one."""
    rid = parse_run_id(path.name)
    if rid is None or rid.kind != "nightly" or rid.subject or not path.is_dir():
        return None
    started = rid.started_at
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
    """The newest nightly runs first."""
    if not runs_dir.is_dir():
        return []
    found = [r for p in runs_dir.iterdir() if (r := read_nightly_run(p)) is not None]
    return sorted(found, key=lambda r: r.id, reverse=True)[:limit]
