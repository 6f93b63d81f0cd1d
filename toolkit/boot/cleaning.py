"""Cleaning reports (``POST /clean``, from the cleaning image ``golden retire`` netboots): parsed, bounded,
bound to the retire attempt's token, and recorded as the host's ``clean`` or ``clean-failed`` mark.

A cleaning report can only ever mark a host ``clean`` or ``clean-failed``: it never sets an observed
build, so it can never make a host look in-sync or available. It counts only with the token of a
live, uncontested attempt's boot script (as an agent report's verified standing, ``boot.evidence``)
on a host that ``golden retire`` marked ``cleaning``. The outcome is the server's own reading of
the disks, never the node's summary: clean only when there is at least one disk and every disk
says ``erased`` by a named method.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from toolkit.boot.evidence import attempt_refusal, reject, token_refusal
from toolkit.boot.reports import RejectKind, ReportRejected
from toolkit.boot.token import DEFAULT_TTL_S, TokenError, verify_token
from toolkit.core.mac import MacError, normalize_mac
from toolkit.fleet.fleet import Fleet
from toolkit.fleet.states import HostState
from toolkit.state.db import Repo

MAX_DISKS = 64
MAX_ATTEMPTS = 10
ERASE_METHODS = ("nvme-sanitize-block", "nvme-format-erase", "ata-secure-erase", "blkdiscard", "zeroout", "overwrite")


@dataclass(frozen=True)
class CleaningReport:
    """A cleaning report as the server keeps it: which boot, and every disk's bounded result."""

    mac: str
    build_id: str
    image: str
    token: str
    disks: tuple[dict[str, Any], ...]

    @property
    def clean(self) -> bool:
        """Every disk erased by a named method (and at least one disk)."""
        return bool(self.disks) and all(d["result"] == "erased" and d["method"] for d in self.disks)

    def summary(self) -> str:
        """One line: each disk, its method or why it failed."""
        return "; ".join(f"{d['name']} ({d['kind']}): " + (f"erased by {d['method']}" if d["result"] == "erased"
                                                             else f"FAILED: {d['detail'] or 'no method erased it'}")
                         for d in self.disks) or "no disk reported"


def _text(v: Any, limit: int) -> str | None:
    return v if isinstance(v, str) and len(v) <= limit else None


def _attempt(a: Any) -> dict[str, Any] | None:
    if not isinstance(a, dict) or a.get("method") not in ERASE_METHODS or isinstance(a.get("rc"), bool) \
            or not isinstance(a.get("rc"), int) or not isinstance(a.get("verified"), bool):
        return None
    return {"method": a["method"], "rc": a["rc"], "verified": a["verified"], "detail": str(a.get("detail", ""))[:300]}


def _disk(d: Any) -> dict[str, Any] | None:
    """One disk's entry, bounded; None when anything about it is malformed. Pure."""
    if not isinstance(d, dict):
        return None
    texts = {k: _text(d.get(k, ""), n) for k, n in (("name", 64), ("kind", 16), ("serial", 128), ("model", 128),
                                                     ("detail", 500), ("method", 32))}
    attempts = d.get("attempts", [])
    size = d.get("size_bytes")
    if (None in texts.values() or not texts["name"] or d.get("result") not in ("erased", "failed")
            or (texts["method"] and texts["method"] not in ERASE_METHODS) or isinstance(size, bool)
            or not isinstance(size, int) or size < 0 or not isinstance(attempts, list) or len(attempts) > MAX_ATTEMPTS):
        return None
    checked = [_attempt(a) for a in attempts]
    if None in checked:
        return None
    return {**texts, "size_bytes": size, "result": d["result"], "attempts": checked}


def parse_cleaning(payload: Any) -> CleaningReport:
    """Validate a cleaning report; ReportRejected(MALFORMED) naming the bad fields."""
    if not isinstance(payload, dict):
        raise ReportRejected("malformed cleaning report: expected a JSON object", RejectKind.MALFORMED)
    try:
        mac = normalize_mac(payload["mac"]) if isinstance(payload.get("mac"), str) else None
    except MacError:
        mac = None
    bad = [k for k in ("build_id", "image", "token") if not _text(payload.get(k), 512)]
    disks = payload.get("disks")
    parsed = [_disk(d) for d in disks] if isinstance(disks, list) and len(disks) <= MAX_DISKS else [None]
    if mac is None:
        bad.insert(0, "mac")
    if None in parsed:
        bad.append("disks")
    if bad:
        raise ReportRejected(f"malformed cleaning report: bad or missing {', '.join(bad)}", RejectKind.MALFORMED, mac)
    return CleaningReport(str(mac), payload["build_id"], payload["image"], payload["token"],
                          tuple(d for d in parsed if d is not None))


def _record(repo: Repo, host: str, report: CleaningReport, attempt: str, now: float) -> str:
    """The host's new mark, its event (the retire waits on it) and the audit entry with every disk."""
    state = HostState.CLEAN if report.clean else HostState.CLEAN_FAILED
    summary = report.summary()
    repo.set_cleaning(host, state.value, now, attempt, summary[:2000], list(report.disks))
    repo.add_event("clean", now, report.mac, host, report.build_id, json.dumps(
        {"attempt": attempt, "result": state.value, "summary": summary[:2000]}))
    repo.add_audit(now, "golden serve", state.value, host, summary[:2000],
                   json.dumps({"attempt": attempt, "build_id": report.build_id, "disks": list(report.disks)}))
    return state.value


def _accept_in(repo: Repo, host: str, report: CleaningReport, nonce: str, addr: str, now: float) -> str:
    row = repo.get_token(nonce)
    refusal = token_refusal(repo, row, host, addr)
    if refusal is not None or row is None:
        raise refusal or ReportRejected("token was never issued by this boot server", RejectKind.UNKNOWN_TOKEN)
    if row.source != "boot" or not row.attempt:
        raise ReportRejected("a cleaning report needs the token of a retire attempt's boot script", RejectKind.ENDED)
    refusal = attempt_refusal(repo.get_attempt(host), row.attempt, now)
    if refusal is not None:
        raise refusal
    mark = repo.get_cleaning(host)
    if mark is None or mark.state != HostState.CLEANING:
        raise ReportRejected(f"host {host} is not being retired (golden retire marks it cleaning first)",
                             RejectKind.ENDED)
    if not repo.spend_token(row.nonce, now):
        raise ReportRejected("token already used (replayed report)", RejectKind.REPLAY)
    return _record(repo, host, report, row.attempt, now)


def accept_cleaning(fleet: Fleet, payload: Any, secret: bytes, addr: str = "",
                    ttl: float = DEFAULT_TTL_S) -> tuple[str, str]:
    """Verify and record a cleaning report; (host, its new state: clean or clean-failed).

    ReportRejected (nothing recorded but a counted reject) when it is not acceptable."""
    mac: str | None = None
    try:
        report = parse_cleaning(payload)
        mac = report.mac
        try:
            claims = verify_token(secret, report.token, mac, report.build_id, ttl=ttl, image=report.image)
        except TokenError as exc:
            raise ReportRejected(exc.message, RejectKind(exc.kind), mac) from None
        host = fleet.host_by_mac(mac)
        if host is None:
            raise ReportRejected("MAC not in the inventory", RejectKind.UNKNOWN_HOST, mac)
        with fleet.db.write_rows() as repo:
            return host.name, _accept_in(repo, host.name, report, claims.nonce, addr, time.time())
    except ReportRejected as rej:
        rej.mac = rej.mac or mac
        reject(fleet, rej, addr)
        raise
