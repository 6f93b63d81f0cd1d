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
- A report must come from the address its token was handed to; its MAC, image and build are signed.
- A token is bound to its attempt and dies with it: once the attempt is disarmed (finished or
  failed), contested, expired or superseded by the next one, its reports get 403 and change nothing.
- Only a report of a live, uncontested attempt is *verified*: it alone sets the host's observed
  build (what a reimage skips on, gates count and a taint is cleared by), and the next tokens it
  hands the agent for re-reports carry that standing (source "verified"). A report with a token
  fetched outside any attempt is an *unverified* observation: kept per host and shown, never acted
  on (it may still taint the host when it reports an unsanctioned login: that only ever asks for a
  reimage). A contest that arrives after the report takes the verified build back.
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

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from toolkit.boot.reports import RejectKind, ReportRejected, parse_report
from toolkit.boot.token import DEFAULT_TTL_S, TokenClaims, TokenError, issue_token, verify_token
from toolkit.core.mac import is_mac, normalize_mac
from toolkit.fleet.fleet import Fleet
from toolkit.fleet.hardware import diff_facts, digest
from toolkit.fleet.logins import matching_grant, parse_login, taint_reason
from toolkit.fleet.slots import row_of, state_of
from toolkit.fleet.status import HostStatus
from toolkit.install.slots import Slot, SlotState, reported
from toolkit.inventory.hosts import Host
from toolkit.state.boots import BOOT_REFUSED
from toolkit.state.db import (
    AttemptRow,
    HostRow,
    LoginRow,
    ObservedReport,
    Repo,
    StateError,
    TaintRow,
    TokenRow,
)

VERIFIED_CHAIN = "verified"  # a next_token handed out with a verified report: its re-reports stay verified
UNVERIFIED_CHAIN = "report"  # a next_token handed out with an unverified report (and every pre-0140 one)
# How long an agent may resend a report whose answer it lost (a replica killed between commit and reply)
# and get that same answer again; past it, or once the answer's token is spent, a resend is a replay.
REANSWER_GRACE_S = 300.0


@dataclass(frozen=True)
class IssuedToken:
    """A boot token handed out, for which reimage attempt, and whether this fetch contested it."""
    token: str
    attempt: str  # "" when no reimage attempt was armed
    contested: bool  # this fetch contested the attempt
    recorded: bool  # False: the state DB could not be written, so no report with it will be accepted


def _contest(repo: Repo, armed: AttemptRow, mac: str, host: str, build_id: str, addr: str, now: float) -> None:
    """Contest the attempt: nobody's report of it counts, and a build it already verified is taken back."""
    repo.contest_attempt(host, armed.attempt, now)
    if repo.forget_verified(host, armed.attempt):
        repo.end_token_chains(host, now)
    repo.add_event("contested", now, mac, host, build_id, json.dumps(
        {"attempt": armed.attempt, "fetched_from": f"{armed.fetched_from},{addr}".strip(",")}))


def issue_boot_token(fleet: Fleet, secret: bytes, mac: str, host: str, build_id: str, addr: str,
                     image: str = "") -> IssuedToken:
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
                    _contest(repo, armed, mac, host, build_id, addr, now)
            token = issue_token(secret, mac, build_id, nonce, issued_at=now, attempt=attempt, image=image)
            repo.insert_token(TokenRow(nonce, mac, host, build_id, attempt, now, addr, None))
    except StateError:
        return IssuedToken(issue_token(secret, mac, build_id, nonce, issued_at=now, image=image), "", False, False)
    return IssuedToken(token, attempt, contested, True)


def answer_nonce(secret: bytes, spent_nonce: str, body_digest: str) -> str:
    """The nonce of the next token that answers the report ``body_digest`` sent with ``spent_nonce``: derived,
    not random, so the same report resent (its answer lost) finds the answer already stored. Pure."""
    mac = hmac.new(secret, f"next-token\0{spent_nonce}\0{body_digest}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def report_digest(payload: Any) -> str:
    """sha256 of a report's canonical JSON: a resent report (same bytes, any key order) has the same. Pure."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _reissue(repo: Repo, secret: bytes, mac: str, host: str, report: ObservedReport, addr: str,
             verified: bool, nonce: str) -> str:
    """The next token for an agent's periodic re-report, with the standing of the report it answers (never
    counted as a fetch); stored in the transaction that accepted the report, so both or neither are."""
    now = time.time()
    source = VERIFIED_CHAIN if verified else UNVERIFIED_CHAIN
    repo.insert_token(TokenRow(nonce, mac, host, report.build_id, "", now, addr, None, source=source))
    return issue_token(secret, mac, report.build_id, nonce, issued_at=now, image=report.image)


def token_refusal(repo: Repo, row: TokenRow | None, host: str, addr: str) -> ReportRejected | None:
    """Why a report with this token row is refused (never issued for the host, spent, other address); None: not."""
    if row is None or row.host != host:
        return ReportRejected("token was never issued by this boot server", RejectKind.UNKNOWN_TOKEN)
    if row.used_at is not None:
        return ReportRejected("token already used (replayed report)", RejectKind.REPLAY)
    if row.issued_to and addr and row.issued_to != addr:
        return ReportRejected(f"report from {addr}, but the boot script went to {row.issued_to}", RejectKind.ADDRESS)
    return None


def attempt_refusal(armed: AttemptRow | None, attempt: str, now: float) -> ReportRejected | None:
    """Why a token of reimage ``attempt`` no longer counts (its attempt ended, was contested or superseded). Pure."""
    if armed is None or armed.attempt != attempt:
        return ReportRejected(f"attempt {attempt} is over: a later attempt superseded it, or it never existed",
                              RejectKind.ENDED)
    if armed.contested_at is not None:
        return ReportRejected(f"attempt {attempt} is contested: its boot script was fetched more than once "
                              f"(from {armed.fetched_from})", RejectKind.CONTESTED)
    if not armed.active(now):
        return ReportRejected(f"attempt {attempt} is over (finished, failed or expired)", RejectKind.ENDED)
    return None


def live_attempt_token(repo: Repo, nonce: str, host: str, addr: str, what: str) -> TokenRow:
    """The token row of ``nonce`` when it is unspent, the host's, from ``addr`` and of the host's live,
    uncontested reimage attempt; else ReportRejected saying which (``what`` names the request in it)."""
    row = repo.get_token(nonce)
    refusal = token_refusal(repo, row, host, addr)
    if refusal is None and (row is None or not row.attempt):
        refusal = ReportRejected(f"{what} counts only with a token of a reimage attempt", RejectKind.ENDED)
    if refusal is None and row is not None:
        refusal = attempt_refusal(repo.get_attempt(host), row.attempt, time.time())
    if refusal is not None or row is None:
        raise refusal or ReportRejected("token was never issued by this boot server", RejectKind.UNKNOWN_TOKEN)
    return row


def standing(repo: Repo, row: TokenRow, now: float) -> bool | ReportRejected:
    """True: the report is verified evidence; False: an unverified observation; or why it is refused."""
    if row.source == VERIFIED_CHAIN:
        return True
    if row.source != "boot" or not row.attempt:
        return False
    refusal = attempt_refusal(repo.get_attempt(row.host), row.attempt, now)
    return True if refusal is None else refusal


def _is_news(prev: HostRow | None, report: ObservedReport, token: TokenRow) -> bool:
    """A boot's first report, or one that changes what we know; a periodic re-report is neither.

    Only news becomes a boot event: a fleet re-reporting every few minutes would otherwise add a
    row per host per interval. The host row still records every report (last_report_at).
    """
    return (token.source == "boot" or prev is None or prev.observed_build != report.build_id
            or prev.drift != report.drift)


def _booted_after(report: ObservedReport, at: float) -> bool:
    try:
        return datetime.fromisoformat(report.booted_at.replace("Z", "+00:00")).timestamp() > at
    except ValueError:
        return False


def clears_taint(taint: TaintRow, report: ObservedReport, token: TokenRow) -> bool:
    """A verified reimage ends a taint: the first report of a boot after it, of a live reimage attempt.

    A periodic re-report, a reboot outside a reimage, or anything unverified never does.
    """
    return token.source == "boot" and bool(token.attempt) and _booted_after(report, taint.at)


def _record_logins(repo: Repo, host: str, mac: str, report: ObservedReport, now: float) -> None:
    """Logins (a login without a grant taints)."""
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


def _record_access(repo: Repo, host: str, mac: str, report: ObservedReport, token: TokenRow, now: float) -> None:
    """Drift paths, logins, and the end of a taint by a reimage (verified reports only)."""
    taint = repo.get_taint(host)
    if taint is not None and clears_taint(taint, report, token) and repo.clear_taint(host, taint.at):
        repo.add_audit(now, "golden serve", "untaint", host, "reimaged",
                       json.dumps({"build_id": report.build_id, "attempt": token.attempt, "was": taint.reason}))
    repo.record_drift(host, report.build_id, report.drift_kinds or {p: "changed" for p in report.drift}, now)
    _record_logins(repo, host, mac, report, now)


def _record_report(repo: Repo, host: str, mac: str, report: ObservedReport, token: TokenRow, now: float) -> bool:
    """Spend the token, record the verified report; False (nothing recorded) when a concurrent report spent it first."""
    if not repo.spend_token(token.nonce, now):
        return False
    news = _is_news(repo.ensure_host(host, mac), report, token)
    repo.set_observed(host, report, now)
    if token.attempt:
        repo.record_verified(host, token.attempt, report.build_id, now)
    _record_access(repo, host, mac, report, token, now)
    observe_hardware(repo, host, report.hardware, report.build_id, now)
    observe_slot(repo, host, report, now)
    if news:
        repo.add_event("report", now, mac, host, report.build_id, json.dumps(
            {"drift": len(report.drift), "hostname": report.hostname, "checks": report.checks,
             "attempt": token.attempt, "secure_boot": report.secure_boot}))
    return True


def observe_slot(repo: Repo, host: str, report: ObservedReport, now: float) -> None:
    """A disk host's verified report names the slot it runs and that slot's build: its ``host_slots`` row follows
    (``slots.reported``: a report from the slot not being tried is a fall-back). A RAM boot names none."""
    if report.slot is None:
        return
    stored = repo.get_slots(host)
    state = reported(state_of(stored) if stored is not None else SlotState(), Slot(report.slot), report.build_id)
    repo.set_slots(row_of(host, state, now))


def observe_hardware(repo: Repo, host: str, facts: dict[str, Any] | None, build_id: str, now: float) -> None:
    """Keep the host's hardware facts: the same machine is touched; a changed one is a new row and a mark."""
    if facts is None:
        return
    latest, fingerprint = repo.latest_hardware(host), digest(facts)
    if latest is not None and latest.digest == fingerprint:
        repo.touch_hardware(latest.id, facts, now, build_id)
        return
    changes = diff_facts(latest.facts, facts) if latest is not None else []
    repo.add_hardware(host, fingerprint, facts, now, build_id, changes)
    if changes:
        repo.mark_hw_changed(host, now, changes)
        repo.add_event("hw-changed", now, None, host, build_id, json.dumps({"changes": changes}))


def _record_unverified(repo: Repo, host: str, mac: str, report: ObservedReport, token: TokenRow, addr: str,
                       now: float) -> bool:
    """Spend the token and keep the report as an unverified observation; it can only ever add a taint."""
    if not repo.spend_token(token.nonce, now):
        return False
    repo.ensure_host(host, mac)
    repo.record_unverified(host, report.image, report.build_id, now, addr or token.issued_to)
    _record_logins(repo, host, mac, report, now)
    # Hardware facts are the node's word either way (lshw on the node): an unverified boot still saw this machine.
    observe_hardware(repo, host, report.hardware, report.build_id, now)
    return True


def reject(fleet: Fleet, rej: ReportRejected, addr: str = "") -> None:
    """Count a refused report per client address and hour (best effort, bounded); nothing else changes."""
    try:
        with fleet.db.write_rows() as repo:
            repo.count_noise(f"reject:{rej.kind.value}", addr or "-", time.time(),
                             f"{rej.mac or '-'}: {rej.reason}")
    except StateError:
        pass


def _verified_claims(payload: Any, secret: bytes, ttl: float) -> tuple[ObservedReport, str, TokenClaims]:
    report, mac, token = parse_report(payload)
    try:
        return report, mac, verify_token(secret, token, mac, report.build_id, ttl=ttl, image=report.image)
    except TokenError as exc:
        raise ReportRejected(exc.message, RejectKind(exc.kind), mac) from None


def _stored_answer(repo: Repo, secret: bytes, mac: str, host: str, report: ObservedReport, addr: str,
                   next_nonce: str, now: float) -> str | None:
    """The token that already answered this very report, when it was recorded but its answer never reached the
    agent (a replica killed between commit and reply): only for the same host and address, within
    REANSWER_GRACE_S, and while that token is unspent. None: the resend is a replay."""
    nxt = repo.get_token(next_nonce)
    if (nxt is None or nxt.host != host or nxt.used_at is not None or (nxt.issued_to or "") != (addr or "")
            or now - nxt.issued_at > REANSWER_GRACE_S):
        return None
    return issue_token(secret, mac, nxt.build_id, next_nonce, issued_at=nxt.issued_at, image=report.image)


def _accept_in(repo: Repo, fleet: Fleet, host: Host, mac: str, report: ObservedReport, nonce: str, addr: str,
               secret: bytes, body_digest: str) -> tuple[HostStatus, str]:
    """Inside one transaction: refuse, or spend and record (verified or not), then status and next token.
    A report resent because its answer was lost gets that answer again and changes nothing."""
    now = time.time()
    row = repo.get_token(nonce)
    next_nonce = answer_nonce(secret, nonce, body_digest)
    refusal = token_refusal(repo, row, host.name, addr)
    if refusal is not None and refusal.kind is RejectKind.REPLAY:
        again = _stored_answer(repo, secret, mac, host.name, report, addr, next_nonce, now)
        if again is not None:
            return fleet.status_in(repo, host), again
    if refusal is not None or row is None:
        raise refusal or ReportRejected("token was never issued by this boot server", RejectKind.UNKNOWN_TOKEN)
    verified = standing(repo, row, now)
    if isinstance(verified, ReportRejected):
        raise verified
    done = (_record_report(repo, host.name, mac, report, row, now) if verified
            else _record_unverified(repo, host.name, mac, report, row, addr, now))
    if not done:
        raise ReportRejected("token already used (replayed report)", RejectKind.REPLAY)
    return fleet.status_in(repo, host), _reissue(repo, secret, mac, host.name, report, addr, bool(verified),
                                                  next_nonce)


def accept_report(fleet: Fleet, payload: Any, secret: bytes, addr: str = "",
                  ttl: float = DEFAULT_TTL_S) -> tuple[HostStatus, str]:
    """Verify and record an agent report; returns (the host's status, the next token).

    ReportRejected (nothing recorded but a counted reject) when it is not acceptable.
    """
    mac: str | None = None
    try:
        report, mac, claims = _verified_claims(payload, secret, ttl)
        host = fleet.host_by_mac(mac)
        if host is None:
            raise ReportRejected("MAC not in the inventory", RejectKind.UNKNOWN_HOST, mac)
        # One transaction: a refusal raised inside rolls back everything, so a refused report changes nothing.
        with fleet.db.write_rows() as repo:
            return _accept_in(repo, fleet, host, mac, report, claims.nonce, addr, secret, report_digest(payload))
    except ReportRejected as rej:
        rej.mac = rej.mac or mac
        reject(fleet, rej, addr)
        raise

_ERRNO_RE = re.compile(r"^(0x)?[0-9a-fA-F]{1,8}$")


def accept_refusal(fleet: Fleet, query: Mapping[str, str], secret: bytes, addr: str = "",
                   ttl: float = DEFAULT_TTL_S) -> tuple[str, str]:
    """Record that the firmware refused to start an attempt's signed image (iPXE's failure branch asked with
    ``mac``, ``build``, ``image``, ``token`` and ``errno``); (MAC, attempt). Firmware evidence can only fail a
    host: it never sets an observed build, and a refusal with a token outside a live, uncontested attempt (or
    from another address) is refused itself (ReportRejected, counted like a refused report)."""
    mac = normalize_mac(query.get("mac", "")) if is_mac(query.get("mac", "")) else ""
    try:
        return mac, _accept_refusal(fleet, mac, query.get("build", ""), query.get("image", ""),
                                    query.get("token", ""), query.get("errno", ""), secret, addr, ttl)
    except ReportRejected as rej:
        rej.mac = rej.mac or mac or None
        reject(fleet, rej, addr)
        raise


def _accept_refusal(fleet: Fleet, mac: str, build_id: str, image: str, token: str, errno: str, secret: bytes,
                    addr: str, ttl: float) -> str:
    try:
        claims = verify_token(secret, token, mac, build_id, ttl=ttl, image=image)
    except TokenError as exc:
        raise ReportRejected(exc.message, RejectKind(exc.kind), mac) from None
    host = fleet.host_by_mac(mac)
    if host is None:
        raise ReportRejected("MAC not in the inventory", RejectKind.UNKNOWN_HOST, mac)
    with fleet.db.write_rows() as repo:
        row = live_attempt_token(repo, claims.nonce, host.name, addr, "a boot refusal")
        repo.spend_token(row.nonce, time.time())  # the refused boot never reaches an agent: nothing may report
        repo.add_event(BOOT_REFUSED, time.time(), mac, host.name, build_id, json.dumps(
            {"attempt": row.attempt, "errno": errno if _ERRNO_RE.match(errno) else "?"}))
        return row.attempt
