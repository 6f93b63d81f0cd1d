"""Agent reports (contract 3): parsing and validation, and the typed reasons a report is refused. Pure.

A report is a JSON object; every field is bounded (lengths, counts, finite numbers) before
anything of it reaches the state DB. A refusal carries a ``RejectKind``, so metrics and callers
never guess the kind from words in its message.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Any

from toolkit.core.mac import MacError, normalize_mac
from toolkit.fleet.hardware import FactsError, clean_facts
from toolkit.install.slots import Slot
from toolkit.state.db import ObservedReport

MAX_REPORT_BYTES = 64 * 1024
MAX_DRIFT_PATHS = 10_000
MAX_PATH_CHARS = 4096
MAX_CHECKS = 200
MAX_LOGINS = 200
MAX_LOGIN_CHARS = 1000
DRIFT_KINDS = ("added", "modified", "deleted")
SLOTS = tuple(s.value for s in Slot)  # a disk host's report names the slot it runs from


class RejectKind(StrEnum):
    """Why an agent report was refused."""
    MALFORMED = "malformed"          # not JSON, wrong types, missing fields, out of bounds
    FORGED = "forged"                # signature does not match MAC and build (or another server's secret)
    EXPIRED = "expired"              # the token is older than its lifetime
    REPLAY = "replay"                # the token was spent before
    UNKNOWN_TOKEN = "unknown-token"  # noqa: S105 - a kind, not a secret; the token was never recorded as issued (e.g. state was read-only)
    UNKNOWN_HOST = "unknown-host"    # the MAC is not in the inventory
    ADDRESS = "address"              # the report comes from another address than the boot script went to
    CONTESTED = "contested"          # the attempt's boot script was fetched twice: nobody's report counts
    ENDED = "ended"                  # the token's attempt is over: finished, failed, expired or superseded
    NOT_DISK = "not-disk"            # an install plan asked for by a host that runs in RAM (install: ram)


class ReportRejected(Exception):
    """A report was not accepted; ``reason`` goes to the log and the boot events, never to state."""

    def __init__(self, reason: str, kind: RejectKind, mac: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.mac = mac


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def decode_report(raw: bytes) -> Any:
    """JSON text to a value; ReportRejected(MALFORMED) for anything that is not strict, finite JSON."""
    try:
        # NaN/Infinity are not JSON; 1e999 parses to inf and is caught by the field checks
        return json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise ReportRejected("malformed report: nested too deeply", RejectKind.MALFORMED) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportRejected(f"malformed report: {str(exc)[:100]}", RejectKind.MALFORMED) from None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _bad_fields(payload: dict[str, Any]) -> list[str]:
    problems = []
    for k in ("build_id", "image", "token", "hostname", "booted_at", "agent_version"):
        v = payload.get(k)
        if not isinstance(v, str) or (not v and k != "agent_version") or len(v) > 512:
            problems.append(k)
    uptime: Any = payload.get("uptime_s")
    if not _finite(uptime) or uptime < 0:
        problems.append("uptime_s")
    drift = payload.get("drift")
    if (not isinstance(drift, list) or len(drift) > MAX_DRIFT_PATHS
            or not all(isinstance(p, str) and len(p) <= MAX_PATH_CHARS for p in drift)):
        problems.append("drift")
    checks = payload.get("checks", {})
    if not isinstance(checks, dict) or len(checks) > MAX_CHECKS or not all(
            isinstance(k, str) and len(k) <= 128 and isinstance(v, dict) and isinstance(v.get("passed"), bool)
            for k, v in checks.items()):
        problems.append("checks")
    kinds = payload.get("drift_kinds", {})
    if not isinstance(kinds, dict) or len(kinds) > MAX_DRIFT_PATHS or not all(
            isinstance(k, str) and len(k) <= MAX_PATH_CHARS and v in DRIFT_KINDS for k, v in kinds.items()):
        problems.append("drift_kinds")
    logins = payload.get("logins", [])
    if not isinstance(logins, list) or len(logins) > MAX_LOGINS or not all(
            isinstance(x, dict) and isinstance(x.get("at"), str) and len(x["at"]) <= 64
            and isinstance(x.get("line"), str) and len(x["line"]) <= MAX_LOGIN_CHARS for x in logins):
        problems.append("logins")
    if "hardware" in payload:
        try:
            clean_facts(payload["hardware"])
        except FactsError:
            problems.append("hardware")
    if not (payload.get("secure_boot") is None or isinstance(payload.get("secure_boot"), bool)):
        problems.append("secure_boot")
    if payload.get("slot") not in (None, *SLOTS):
        problems.append("slot")
    if "booted_at" not in problems:
        try:
            datetime.fromisoformat(payload["booted_at"].replace("Z", "+00:00"))
        except ValueError:
            problems.append("booted_at")
    return problems


def parse_report(payload: Any) -> tuple[ObservedReport, str, str]:
    """Validate the agent's JSON; returns (report, normalized MAC, token)."""
    if not isinstance(payload, dict):
        raise ReportRejected("malformed report: expected a JSON object", RejectKind.MALFORMED)
    raw_mac = payload.get("mac")
    try:
        mac = normalize_mac(raw_mac) if isinstance(raw_mac, str) else None
    except MacError:
        mac = None
    if mac is None:
        raise ReportRejected("malformed report: mac is missing or not a MAC address", RejectKind.MALFORMED)
    problems = _bad_fields(payload)
    if problems:
        raise ReportRejected(f"malformed report: bad or missing {', '.join(problems)}", RejectKind.MALFORMED, mac)
    checks = payload.get("checks", {})
    drift = tuple(payload["drift"])
    kinds = payload.get("drift_kinds", {})
    report = ObservedReport(
        image=payload["image"], build_id=payload["build_id"], booted_at=payload["booted_at"],
        hostname=payload["hostname"][:255], uptime_s=float(payload["uptime_s"]), drift=drift,
        agent_version=payload["agent_version"][:64],
        checks={k: {"passed": v["passed"], "detail": str(v.get("detail", ""))[:500]} for k, v in checks.items()},
        drift_kinds={path: kinds.get(path, "changed") for path in drift},
        logins=tuple((x["at"], x["line"]) for x in payload.get("logins", [])),
        hardware=clean_facts(payload["hardware"]) if "hardware" in payload else None,
        secure_boot=payload.get("secure_boot"),
        slot=payload.get("slot"),
    )
    return report, mac, payload["token"]
