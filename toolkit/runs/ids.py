"""The one run-id scheme: ``<UTC start, 20261207T124037Z>-<kind>[-<subject>]-<6 hex>``.

The start sorts the ids by time as text; the kind says which record holds the run (a folder
under the runs directory for bake and nightly, the state database's journal for reimage); the
subject, for a bake, is the image.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

KINDS = ("bake", "nightly", "reimage")
_STAMP = "%Y%m%dT%H%M%SZ"
_RUN_ID_RE = re.compile(r"^(\d{8}T\d{6}Z)-(bake|nightly|reimage)-(?:([a-z0-9_-]+)-)?[0-9a-f]{6}$")


@dataclass(frozen=True)
class RunId:
    """A run id read back: when the run started, its kind and its subject ("" when it has none)."""

    started_at: float
    kind: str
    subject: str


def new_run_id(kind: str, subject: str = "", now: datetime | None = None) -> str:
    """A fresh id for a run of ``kind`` (one of KINDS) about ``subject`` (a bake's image)."""
    if kind not in KINDS:
        raise ValueError(f"not a run kind: {kind!r}")
    now = now or datetime.now(UTC)
    return f"{now:{_STAMP}}-{kind}-{subject + '-' if subject else ''}{secrets.token_hex(3)}"


def parse_run_id(value: str) -> RunId | None:
    """The parts of a run id, or None when ``value`` is not one."""
    m = _RUN_ID_RE.match(value)
    if m is None:
        return None
    started = datetime.strptime(m.group(1), _STAMP).replace(tzinfo=UTC).timestamp()
    return RunId(started, m.group(2), m.group(3) or "")
