"""Boot evidence: tokens as issued and spent, so a reimage counts a host done only on a genuine report.

Threat model: the provisioning network is reachable by machines other than the one being
reimaged, MACs are not secret, and anyone there may fetch ``/boot/<mac>.ipxe`` and POST
``/report``. What we hold against that (README, "Boot evidence"):

- A token is bound by HMAC to MAC, build, issue time and, during a reimage, the controller's
  attempt; it expires ``ttl`` seconds after issue and can be spent once.
- The controller arms an attempt on the host just before its power action. Only scripts fetched
  after that carry the attempt, so nothing fetched earlier can stand in for the boot.
- The first script fetched within an armed attempt is the host's; a second fetch within the same
  attempt contests it (first come, first served, as Ironic's agent token): every report for that
  attempt is refused, the controller fails the host with "contested", a metric and an event record it.
- A report must come from the address its token was handed to.
- The controller counts an attempt's report only once ``contest_window`` seconds have passed since
  its power action with the attempt still uncontested, so an impostor that reports at once is
  still caught by the real machine's fetch (firmware asks for its script within seconds).

A bystander therefore cannot make a reimage succeed while the real machine also boots (its own
fetch contests the impostor's), nor with a token from before the power action. The remaining
gap, an impostor that answers for a machine which never fetches its script at all, needs
evidence only the booted machine holds (a key made in its RAM at boot and pinned on the first
report, or a TPM quote): the next step, described in the README.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from toolkit.boot.reports import RejectKind, ReportRejected, parse_report
from toolkit.boot.token import DEFAULT_TTL_S, TokenError, issue_token, verify_token
from toolkit.fleet.fleet import Fleet
from toolkit.fleet.logins import matching_grant, parse_login, taint_reason
from toolkit.fleet.status import HostStatus
from toolkit.state.db import HostRow, LoginRow, ObservedReport, Repo, StateError, TaintRow, TokenRow


@dataclass(frozen=True)
class IssuedToken:
    """A boot token handed out, for which reimage attempt, and whether this fetch contested it."""
    token: str
    attempt: str  # "" when no reimage attempt was armed
    contested: bool  # this fetch contested the attempt
    recorded: bool  # False: the state DB could not be written, so no report with it will be accepted


def issue_boot_token(fleet: Fleet, secret: bytes, mac: str, host: str, build_id: str, addr: str) -> IssuedToken:
    """A fresh token for the boot script ``host`` fetched from ``addr``, counted against its armed attempt."""
    nonce = secrets.token_hex(16)
    now = time.time()
    attempt, contested = "", False
    try:
        # count_fetch is one UPDATE: two fetches of one attempt queue on its row and count 1, then 2
        with fleet.db.write_rows() as repo:
            armed = repo.get_attempt(host)
            if armed is not None and armed.active(now) and armed.build_id == build_id:
                attempt = armed.attempt
                if repo.count_fetch(host, attempt, addr) > 1:
                    contested = True
                    repo.contest_attempt(host, attempt, now)
                    repo.add_event("contested", now, mac, host, build_id, json.dumps(
                        {"attempt": attempt, "fetched_from": f"{armed.fetched_from},{addr}".strip(",")}))
            token = issue_token(secret, mac, build_id, nonce, issued_at=now, attempt=attempt)
            repo.insert_token(TokenRow(nonce, mac, host, build_id, attempt, now, addr, None))
    except StateError:
        return IssuedToken(issue_token(secret, mac, build_id, nonce, issued_at=now), "", False, False)
    return IssuedToken(token, attempt, contested, True)


def _reissue(repo: Repo, secret: bytes, mac: str, host: str, build_id: str, attempt: str, addr: str) -> str:
    """The next token for an agent's periodic re-report, bound to the same attempt (never counted as a
    fetch); stored in the transaction that accepted the report, so both or neither are."""
    nonce = secrets.token_hex(16)
    now = time.time()
    repo.insert_token(TokenRow(nonce, mac, host, build_id, attempt, now, addr, None, source="report"))
    return issue_token(secret, mac, build_id, nonce, issued_at=now, attempt=attempt)


def _refusal(repo: Repo, row: TokenRow | None, host: str, attempt: str, addr: str) -> ReportRejected | None:
    if row is None or row.host != host:
        return ReportRejected("token was never issued by this boot server", RejectKind.UNKNOWN_TOKEN)
    if row.used_at is not None:
        return ReportRejected("token already used (replayed report)", RejectKind.REPLAY)
    if row.issued_to and addr and row.issued_to != addr:
        return ReportRejected(f"report from {addr}, but the boot script went to {row.issued_to}", RejectKind.ADDRESS)
    if attempt:
        armed = repo.get_attempt(host)
        if armed is not None and armed.attempt == attempt and armed.contested_at is not None:
            return ReportRejected(f"attempt {attempt} is contested: its boot script was fetched more than once "
                                  f"(from {armed.fetched_from})", RejectKind.CONTESTED)
    return None


def _is_news(prev: HostRow | None, report: ObservedReport, token: TokenRow) -> bool:
    """A boot's first report, or one that changes what we know; a periodic re-report is neither.

    Only news becomes a boot event: a fleet re-reporting every few minutes would otherwise add a
    row per host per interval. The host row still records every report (last_report_at).
    """
    return (token.source != "report" or prev is None or prev.observed_build != report.build_id
            or prev.drift != report.drift)


def _booted_after(report: ObservedReport, at: float) -> bool:
    try:
        return datetime.fromisoformat(report.booted_at.replace("Z", "+00:00")).timestamp() > at
    except ValueError:
        return False


def clears_taint(taint: TaintRow, report: ObservedReport, token: TokenRow) -> bool:
    """A reimage ends a taint: the first report of a boot after it, of a reimage attempt or of another build.

    A periodic re-report, or a reboot of the tainted build outside a reimage, never does.
    """
    reimaged = bool(token.attempt) or (taint.build_id is not None and report.build_id != taint.build_id)
    return token.source == "boot" and reimaged and _booted_after(report, taint.at)


def _record_access(repo: Repo, host: str, mac: str, report: ObservedReport, token: TokenRow, now: float) -> None:
    """Drift paths, logins (a login without a grant taints), and the end of a taint by a reimage."""
    taint = repo.get_taint(host)
    if taint is not None and clears_taint(taint, report, token) and repo.clear_taint(host, taint.at):
        repo.add_audit(now, "golden serve", "untaint", host, "reimaged",
                       json.dumps({"build_id": report.build_id, "attempt": token.attempt, "was": taint.reason}))
    repo.record_drift(host, report.build_id, report.drift_kinds or {p: "changed" for p in report.drift}, now)
    grants = repo.list_grants(host) if report.logins else []
    for at, line in report.logins:
        login = parse_login(at, line)
        grant = matching_grant(login, host, grants)
        row = LoginRow(host, at, line, login.user, login.from_addr, login.method, login.serial, login.key_id,
                       grant.id if grant else None, report.build_id, now)
        if not repo.record_login(row):
            continue
        if grant is None:
            reason = f"login without a break-glass certificate: {taint_reason(login)}"
            repo.add_event("unauthorized-login", now, mac, host, report.build_id, reason)
            repo.add_audit(now, "golden serve", "taint", host, reason, json.dumps({"line": line}))
            repo.taint_host(host, now, report.build_id, "login", reason)
        elif repo.taint_host(host, now, report.build_id, "breakglass",
                             f"break-glass login by {login.user} with grant {grant.id}"):
            # a grant outlives a reimage when its TTL does: whoever logs in with it, the boot is touched
            repo.add_audit(now, "golden serve", "taint", host, f"break-glass login (grant {grant.id})",
                           json.dumps({"line": line}))


def _record_report(repo: Repo, host: str, mac: str, report: ObservedReport, token: TokenRow, attempt: str,
                   now: float) -> bool:
    """Spend the token and record the report; False (nothing recorded) when a concurrent report spent it first."""
    if not repo.spend_token(token.nonce, now):
        return False
    news = _is_news(repo.ensure_host(host, mac), report, token)
    repo.set_observed(host, report, now)
    _record_access(repo, host, mac, report, token, now)
    if news:
        repo.add_event("report", now, mac, host, report.build_id, json.dumps(
            {"drift": len(report.drift), "hostname": report.hostname, "checks": report.checks, "attempt": attempt}))
    return True


def reject(fleet: Fleet, rej: ReportRejected) -> None:
    """Append a refused report to the boot events (best effort); nothing else changes."""
    try:
        with fleet.db.write_rows() as repo:
            repo.add_event("reject", time.time(), rej.mac, None, None, f"{rej.kind.value}: {rej.reason}")
    except StateError:
        pass


def accept_report(fleet: Fleet, payload: Any, secret: bytes, addr: str = "",
                  ttl: float = DEFAULT_TTL_S) -> tuple[HostStatus, str]:
    """Verify and record an agent report; returns (the host's status, the next token).

    ReportRejected (state untouched apart from the reject event) when it is not acceptable.
    """
    try:
        report, mac, token = parse_report(payload)
        try:
            claims = verify_token(secret, token, mac, report.build_id, ttl=ttl)
        except TokenError as exc:
            raise ReportRejected(exc.message, RejectKind(exc.kind), mac) from None
        host = fleet.host_by_mac(mac)
        if host is None:
            raise ReportRejected("MAC not in the inventory", RejectKind.UNKNOWN_HOST, mac)
        # One transaction: spend, record, the host's status as the agent should see it, the next token.
        with fleet.db.write_rows() as repo:
            row = repo.get_token(claims.nonce)
            refusal = _refusal(repo, row, host.name, claims.attempt, addr)
            if refusal is None and row is not None and not _record_report(repo, host.name, mac, report, row,
                                                                          claims.attempt, time.time()):
                refusal = ReportRejected("token already used (replayed report)", RejectKind.REPLAY)
            if refusal is None:
                status = fleet.status_in(repo, host)
                next_token = _reissue(repo, secret, mac, host.name, report.build_id, claims.attempt, addr)
        if refusal is not None:
            refusal.mac = mac
            raise refusal
    except ReportRejected as rej:
        reject(fleet, rej)
        raise
    return status, next_token
