"""A run's record under ``<runs_dir>/<run-id>/``, in the manner of ansible-runner's artifacts.

``command`` (what ran), ``inputs.json`` (with what), ``stdout`` (the full log), ``status`` and ``rc``
(what happened), ``error`` (the message shown to the user, when it failed).
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from toolkit.core.fsutil import atomic_write

log = logging.getLogger("golden.run")


def new_bake_run_id(kind: str, subject: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{kind}-{subject}-{secrets.token_hex(3)}"


def _write(path: Path, text: str) -> None:
    atomic_write(path, text, fsync=False)


@dataclass(frozen=True)
class RunRecord:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def stdout(self) -> Path:
        return self.path / "stdout"

    @classmethod
    def create(cls, runs_dir: Path, run_id: str) -> RunRecord:
        path = runs_dir / run_id
        path.mkdir(parents=True)
        rec = cls(path)
        _write(path / "status", "starting\n")
        rec.stdout.touch()
        return rec

    def start(self, command: str, inputs: dict[str, Any]) -> None:
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
        return (self.path / "status").read_text().strip()
