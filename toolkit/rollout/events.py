"""What a reimage reads out of boot events' JSON details: the attempt, health checks, refusals. Pure."""

from __future__ import annotations

import json
from collections.abc import Sequence


def reported_checks(detail: str) -> dict[str, dict[str, object]]:
    """The health check results a report's event detail carries ({} when none)."""
    try:
        data = json.loads(detail or "{}")
    except ValueError:
        return {}
    checks = data.get("checks") if isinstance(data, dict) else None
    return checks if isinstance(checks, dict) else {}


def failed_checks(required: Sequence[str], reported: dict[str, dict[str, object]]) -> list[str]:
    """Names of required checks that the report did not show as passed (missing counts as failed)."""
    out = []
    for name in required:
        entry = reported.get(name)
        if not isinstance(entry, dict) or entry.get("passed") is not True:
            detail = entry.get("detail") if isinstance(entry, dict) else "not reported"
            out.append(f"{name} ({detail})")
    return out


def event_detail(detail: str) -> dict[str, object]:
    """An event's JSON detail as a dict ({} when it is not one)."""
    try:
        data = json.loads(detail or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def event_attempt(detail: str) -> str:
    """The reimage attempt an event's token belonged to ("" for none)."""
    return str(event_detail(detail).get("attempt") or "")


def refused_errno(detail: str) -> str:
    """The iPXE error a boot refusal carried ("?" when it did not say)."""
    return str(event_detail(detail).get("errno") or "?")


def fetched_from(detail: str) -> str:
    """Where a contested boot script was fetched from, in words."""
    return f"from {event_detail(detail).get('fetched_from') or '?'}"
