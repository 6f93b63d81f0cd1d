"""Rendering for the CLI: human tables on a terminal, JSON for scripts, errors without tracebacks."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.core.config import Settings, load_settings
from toolkit.core.errors import CommandError, GoldenError
from toolkit.core.logs import stderr_line
from toolkit.core.text import printable


def when(ts: float | None) -> str:
    """The one way the CLI shows a time to people: UTC, labelled ("2026-12-07 12:40:16 UTC"); "-" for none."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"


def to_jsonable(obj: Any) -> Any:
    """``obj`` as JSON data: dataclasses, pydantic models, mappings, sequences and paths unfolded."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass
class Context:
    """What every verb gets: --json, --debug, --project and --home, and the ways to render."""
    json: bool = False
    debug: bool = False
    project: str | None = None
    home: str | None = None

    def settings(self) -> Settings:
        """The settings of this run (--project and --home over the environment)."""
        return load_settings(
            project=Path(self.project) if self.project else None,
            home=Path(self.home) if self.home else None,
        )

    @property
    def interactive(self) -> bool:
        """True when a person watches stderr (a terminal, not --json)."""
        return not self.json and sys.stderr.isatty()

    @property
    def log_lines(self) -> bool:
        """Progress as one line per step: stderr is a log file, a pipe or a journal, not a terminal."""
        return not self.json and not sys.stderr.isatty()

    def emit(self, data: Any) -> None:
        """Write a JSON document to stdout (only in --json mode)."""
        json.dump(to_jsonable(data), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")

    def emit_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """A JSON list of flat objects, one per line: 10,000 hosts in milliseconds (json's C encoder
        only runs without ``indent``), still one JSON document."""
        sys.stdout.write("[\n" + ",\n".join(json.dumps(to_jsonable(r), sort_keys=True) for r in rows) + "\n]\n")

    def say(self, text: str) -> None:
        """Human output on stdout; suppressed in --json mode."""
        if not self.json:
            print(text)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A human table on stdout (nothing in --json mode)."""
        if self.json:
            return
        # cells come from agents, proxies and file names on nodes: control characters never reach the terminal
        cells = [[str(h) for h in headers]] + [["" if c is None else printable(c) for c in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        for n, row in enumerate(cells):
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if n == 0:
                print("  ".join("-" * w for w in widths))

    def fail(self, exc: GoldenError) -> int:
        """Show a typed error (one line, its log tail and hint; JSON with --json); its exit code."""
        if self.json:
            payload: dict[str, Any] = {"error": type(exc).__name__, "message": exc.message}
            if exc.hint:
                payload["hint"] = exc.hint
            if isinstance(exc, CommandError) and exc.log_tail:
                payload["log_tail"] = exc.log_tail
            json.dump(payload, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            stderr_line(f"golden: error: {exc.message}", logging.ERROR)
            if isinstance(exc, CommandError) and exc.log_tail:
                stderr_line("--- last lines of its log ---\n" + exc.log_tail, logging.ERROR)
            if exc.hint:
                stderr_line(f"hint: {exc.hint}", logging.ERROR)
        return exc.exit_code
