"""The state database: channels and their audit history, fleet state, boot events, used tokens.

``StateDB`` is what every caller holds; ``SQLiteStateDB`` (here) is the embedded default and
``PostgresStateDB`` (``postgres.py``) the scale-out one. Both run the same ``Repo`` queries and
the same migrations (``schema.py``), recorded in ``schema_migrations``.

SQLite: every connection runs in WAL mode with a busy timeout, so readers never block the writer
and concurrent golden commands queue instead of failing. ``write()`` takes the write lock up front
(BEGIN IMMEDIATE): a command reads the current value and writes its change under the same lock,
so two racing commands cannot both act on a stale read.

All SQL lives in this package behind ``Repo`` methods (named for what callers need: channels,
hosts, boot events, tokens, the reimage journal); callers never see a cursor or a statement.
Queries are written once, with ``?`` placeholders, in SQL both engines accept
(``ON CONFLICT``, ``RETURNING``, ``IS NOT DISTINCT FROM``, the quoted ``"user"`` column).

When the database cannot be written (a full disk, a read-only file system) a write raises
``StateWriteError`` with one line naming the path; the boot server catches it and keeps answering
from what it can read.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from toolkit.core.errors import GoldenError, StoreError
from toolkit.state.evidence import EvidenceRoom
from toolkit.state.private import open_read_only, private_db, private_dir, refuse_foreign, writable
from toolkit.state.schema import MIGRATIONS, TABLES, Migration, split_statements

BUSY_TIMEOUT_MS = 30_000
log = logging.getLogger("golden.state")


class StateError(GoldenError):
    """The state database cannot be opened or migrated."""


class StateWriteError(StateError):
    """The state database cannot be written now (full disk, read-only file system or file)."""


def _write_error(path: Path, exc: sqlite3.Error) -> GoldenError:
    text = str(exc).lower()
    if "full" in text:
        return StateWriteError(f"state database is full: {path}", hint="free space on that file system")
    if "readonly" in text or "read-only" in text or "read only" in text:
        return StateWriteError(f"state database is read-only: {path}",
                               hint="check that file system and the file's permissions")
    if "locked" in text or "busy" in text:
        return StoreError(f"the state database {path} stayed locked: {exc}",
                          hint="another golden command is writing; retry when it finishes")
    return StateWriteError(f"cannot write the state database {path}: {exc}")


# ---- rows handed to callers (no cursors or sqlite3.Row escape this module) ----

@dataclass(frozen=True)
class ChannelRow:
    image: str
    channel: str
    build_id: str
    updated_at: float


@dataclass(frozen=True)
class HistoryRow:
    id: int
    image: str
    channel: str
    action: str
    from_build: str | None
    to_build: str
    user: str
    at: float
    reason: str
    forced: bool


@dataclass(frozen=True)
class HostRow:
    name: str
    mac: str
    desired_image: str | None
    desired_build: str | None
    desired_at: float | None
    served_build: str | None
    served_at: float | None
    observed_image: str | None
    observed_build: str | None
    observed_since: float | None
    booted_at: str | None
    last_report_at: float | None
    hostname: str | None
    uptime_s: float | None
    drift: tuple[str, ...]
    agent_version: str | None


@dataclass(frozen=True)
class UnknownMachineRow:
    mac: str
    first_seen: float
    last_seen: float
    seen_count: int
    remote_addr: str | None


@dataclass(frozen=True)
class BootEventRow:
    id: int
    at: float
    kind: str
    mac: str | None
    host: str | None
    build_id: str | None
    detail: str


@dataclass(frozen=True)
class ObservedReport:
    """What a verified agent report sets on its host."""

    image: str
    build_id: str
    booted_at: str
    hostname: str
    uptime_s: float
    drift: tuple[str, ...]
    agent_version: str
    # Optional boot-stage check results the agent may send: {name: {"passed": bool, "detail": str}}.
    checks: dict[str, dict[str, object]] = field(default_factory=dict, compare=False, hash=False)
    # Each drifted path's kind (added | modified | deleted); older agents send none ("changed").
    drift_kinds: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # Login lines from the node's journal since boot: ((ISO time, line), ...).
    logins: tuple[tuple[str, str], ...] = field(default=(), compare=False, hash=False)


@dataclass(frozen=True)
class DriftRow:
    """One path a host's overlay holds outside its allowlist, since when."""

    host: str
    path: str
    kind: str  # added | modified | deleted | changed
    build_id: str
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class LoginRow:
    """A login an agent reported, parsed; ``grant_id`` is the break-glass grant it used, if any."""

    host: str
    at: str
    line: str
    user: str
    from_addr: str
    method: str
    serial: int | None
    key_id: str
    grant_id: int | None
    build_id: str | None
    seen_at: float
    id: int = 0


@dataclass(frozen=True)
class TaintRow:
    """A host that someone may have changed by hand: it stays tainted until it is reimaged."""

    host: str
    at: float
    build_id: str | None
    source: str  # break-glass | login
    reason: str


@dataclass(frozen=True)
class GrantRow:
    """A break-glass certificate as issued; ``id`` is its serial."""

    id: int
    host: str
    mac: str
    principal: str
    user: str
    reason: str
    issued_at: float
    expires_at: float
    fingerprint: str
    key_id: str

    def active(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True)
class StepRow:
    """One reimage journal entry: a host's step (intent, done or failed) in one attempt."""

    id: int
    run_id: str
    host: str
    wave: int
    attempt: int
    step: str
    phase: str
    at: float
    detail: str


@dataclass(frozen=True)
class RunRow:
    """One reimage run: its plan and where it stands."""

    id: str
    created_at: float
    updated_at: float
    user: str
    pattern: str
    image: str
    target_build: str
    plan: dict[str, Any]
    status: str
    summary: str


@dataclass(frozen=True)
class NewStep:
    """A journal entry to append (``record_steps``)."""

    host: str
    wave: int
    attempt: int
    step: str
    phase: str
    detail: str = ""


@dataclass(frozen=True)
class TokenRow:
    """A boot token as issued: to which host and address, for which build and attempt, and whether spent."""

    nonce: str
    mac: str
    host: str
    build_id: str
    attempt: str
    issued_at: float
    issued_to: str
    used_at: float | None
    source: str = "boot"  # "boot": in a boot script (a boot's first report spends it); "report": a next_token


@dataclass(frozen=True)
class AttemptRow:
    """A reimage attempt armed on a host: boot scripts fetched for it count, a second one contests it."""

    host: str
    attempt: str
    build_id: str
    armed_at: float
    expires_at: float
    fetches: int
    fetched_from: str
    contested_at: float | None
    disarmed_at: float | None

    def active(self, now: float) -> bool:
        return self.disarmed_at is None and now < self.expires_at


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: float
    user: str
    action: str
    subject: str
    reason: str
    detail: str


@dataclass(frozen=True)
class LeaseRow:
    """A host leased to the controller ``holder`` driving run ``run_id``, until ``expires_at``."""

    host: str
    run_id: str
    holder: str
    acquired_at: float
    expires_at: float


def _run(r: sqlite3.Row) -> RunRow:
    return RunRow(r["id"], r["created_at"], r["updated_at"], r["user"], r["pattern"], r["image"],
                  r["target_build"], json.loads(r["plan"]), r["status"], r["summary"])


def _step(r: sqlite3.Row) -> StepRow:
    return StepRow(r["id"], r["run_id"], r["host"], r["wave"], r["attempt"], r["step"], r["phase"], r["at"],
                   r["detail"])


def _host(r: sqlite3.Row) -> HostRow:
    return HostRow(
        name=r["name"], mac=r["mac"], desired_image=r["desired_image"], desired_build=r["desired_build"],
        desired_at=r["desired_at"], served_build=r["served_build"], served_at=r["served_at"],
        observed_image=r["observed_image"], observed_build=r["observed_build"],
        observed_since=r["observed_since"], booted_at=r["booted_at"], last_report_at=r["last_report_at"],
        hostname=r["hostname"], uptime_s=r["uptime_s"], drift=tuple(json.loads(r["drift"] or "[]")),
        agent_version=r["agent_version"],
    )


def _grant(r: sqlite3.Row) -> GrantRow:
    return GrantRow(r["id"], r["host"], r["mac"], r["principal"], r["user"], r["reason"], r["issued_at"],
                    r["expires_at"], r["fingerprint"], r["key_id"])


def _history(r: sqlite3.Row) -> HistoryRow:
    return HistoryRow(
        id=r["id"], image=r["image"], channel=r["channel"], action=r["action"], from_build=r["from_build"],
        to_build=r["to_build"], user=r["user"], at=r["at"], reason=r["reason"], forced=bool(r["forced"]),
    )


class Connection(Protocol):
    """What ``Repo`` needs of a connection: ``execute`` with ``?`` placeholders, rows readable by column name."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Any: ...


class Repo(EvidenceRoom):
    """Every query golden runs against the state DB. One instance per transaction (evidence rooms: ``evidence``)."""

    def __init__(self, conn: Connection) -> None:
        self._c = conn

    # ---- channels ----
    def get_channel(self, image: str, channel: str) -> ChannelRow | None:
        r = self._c.execute("SELECT * FROM channels WHERE image = ? AND channel = ?", (image, channel)).fetchone()
        return ChannelRow(r["image"], r["channel"], r["build_id"], r["updated_at"]) if r else None

    def list_channels(self, image: str | None = None) -> list[ChannelRow]:
        if image is None:
            rows = self._c.execute("SELECT * FROM channels ORDER BY image, channel").fetchall()
        else:
            rows = self._c.execute("SELECT * FROM channels WHERE image = ? ORDER BY channel", (image,)).fetchall()
        return [ChannelRow(r["image"], r["channel"], r["build_id"], r["updated_at"]) for r in rows]

    def set_channel(self, image: str, channel: str, build_id: str, at: float) -> None:
        self._c.execute(
            "INSERT INTO channels (image, channel, build_id, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (image, channel) DO UPDATE SET build_id = excluded.build_id, updated_at = excluded.updated_at",
            (image, channel, build_id, at),
        )

    def append_history(self, image: str, channel: str, action: str, from_build: str | None, to_build: str,
                       user: str, at: float, reason: str, forced: bool) -> int:
        cur = self._c.execute(
            "INSERT INTO channel_history (image, channel, action, from_build, to_build, \"user\", at, reason, forced) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (image, channel, action, from_build, to_build, user, at, reason, int(forced)),
        )
        return int(cur.fetchone()["id"])

    def history(self, image: str | None = None, channel: str | None = None) -> list[HistoryRow]:
        q, params = "SELECT * FROM channel_history WHERE 1 = 1", []
        if image is not None:
            q += " AND image = ?"
            params.append(image)
        if channel is not None:
            q += " AND channel = ?"
            params.append(channel)
        return [_history(r) for r in self._c.execute(q + " ORDER BY id", params).fetchall()]

    # ---- hosts ----
    def get_host(self, name: str) -> HostRow | None:
        r = self._c.execute("SELECT * FROM hosts WHERE name = ?", (name,)).fetchone()
        return _host(r) if r else None

    def get_host_by_mac(self, mac: str) -> HostRow | None:
        r = self._c.execute("SELECT * FROM hosts WHERE mac = ?", (mac,)).fetchone()
        return _host(r) if r else None

    def list_hosts(self) -> list[HostRow]:
        return [_host(r) for r in self._c.execute("SELECT * FROM hosts ORDER BY name").fetchall()]

    def ensure_host(self, name: str, mac: str) -> HostRow:
        """Create the host's row, or move its MAC (a replaced NIC) and free the MAC from any stale row;
        the row as it is now (one statement less on the report path than a separate read)."""
        self._c.execute("DELETE FROM hosts WHERE mac = ? AND name != ?", (mac, name))
        r = self._c.execute(
            "INSERT INTO hosts (name, mac) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET mac = excluded.mac "
            "RETURNING *",
            (name, mac),
        ).fetchone()
        return _host(r)

    def set_desired(self, name: str, image: str | None, build_id: str | None, at: float) -> None:
        self._c.execute("UPDATE hosts SET desired_image = ?, desired_build = ?, desired_at = ? WHERE name = ?",
                        (image, build_id, at, name))

    def set_served(self, name: str, build_id: str, at: float) -> None:
        self._c.execute("UPDATE hosts SET served_build = ?, served_at = ? WHERE name = ?", (build_id, at, name))

    def set_observed(self, name: str, report: ObservedReport, at: float) -> None:
        self._c.execute(
            "UPDATE hosts SET "
            "observed_since = CASE WHEN observed_build IS NOT DISTINCT FROM ? THEN observed_since ELSE ? END, "
            "observed_image = ?, observed_build = ?, booted_at = ?, last_report_at = ?, hostname = ?, "
            "uptime_s = ?, drift = ?, agent_version = ? WHERE name = ?",
            (report.build_id, at, report.image, report.build_id, report.booted_at, at, report.hostname,
             report.uptime_s, json.dumps(list(report.drift)), report.agent_version, name),
        )

    def delete_host(self, name: str) -> None:
        self._c.execute("DELETE FROM hosts WHERE name = ?", (name,))

    # ---- drift paths, logins, taints, break-glass grants ----
    def record_drift(self, host: str, build_id: str, kinds: dict[str, str], at: float) -> None:
        """The host's drift is now exactly ``kinds`` ({path: kind}); paths seen before keep their first_seen."""
        if not kinds:  # the common report: no drift, one statement
            self._c.execute("DELETE FROM drift_paths WHERE host = ?", (host,))
            return
        self._c.execute("DELETE FROM drift_paths WHERE host = ? AND build_id != ?", (host, build_id))
        known = {r["path"] for r in self._c.execute("SELECT path FROM drift_paths WHERE host = ?", (host,))}
        gone = known - set(kinds)
        self._c.executemany("DELETE FROM drift_paths WHERE host = ? AND path = ?", [(host, p) for p in sorted(gone)])
        self._c.executemany(
            "INSERT INTO drift_paths (host, path, kind, build_id, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (host, path) DO UPDATE SET kind = excluded.kind, last_seen = excluded.last_seen",
            [(host, p, k, build_id, at, at) for p, k in sorted(kinds.items())])

    def list_drift(self, host: str | None = None) -> list[DriftRow]:
        if host is None:
            rows = self._c.execute("SELECT * FROM drift_paths ORDER BY host, path")
        else:
            rows = self._c.execute("SELECT * FROM drift_paths WHERE host = ? ORDER BY path", (host,))
        return [DriftRow(r["host"], r["path"], r["kind"], r["build_id"], r["first_seen"], r["last_seen"])
                for r in rows.fetchall()]

    def record_login(self, row: LoginRow) -> bool:
        """Remember a reported login; False when it was reported before (agents resend all since boot)."""
        cur = self._c.execute(
            "INSERT INTO host_logins (host, at, line, login_user, from_addr, method, serial, key_id, grant_id, "
            "build_id, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (host, at, line) DO NOTHING",
            (row.host, row.at, row.line, row.user, row.from_addr, row.method, row.serial, row.key_id, row.grant_id,
             row.build_id, row.seen_at))
        return cur.rowcount == 1

    def list_logins(self, host: str | None = None, limit: int = 500) -> list[LoginRow]:
        if host is None:
            rows = self._c.execute("SELECT * FROM host_logins ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._c.execute("SELECT * FROM host_logins WHERE host = ? ORDER BY id DESC LIMIT ?", (host, limit))
        return [LoginRow(r["host"], r["at"], r["line"], r["login_user"], r["from_addr"], r["method"], r["serial"],
                         r["key_id"], r["grant_id"], r["build_id"], r["seen_at"], r["id"]) for r in rows.fetchall()]

    def taint_host(self, host: str, at: float, build_id: str | None, source: str, reason: str) -> bool:
        """Taint the host; False when it already was (the first reason stays: it says when trust ended)."""
        cur = self._c.execute(
            "INSERT INTO host_taints (host, at, build_id, source, reason) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (host) DO NOTHING", (host, at, build_id, source, reason))
        return cur.rowcount == 1

    def get_taint(self, host: str) -> TaintRow | None:
        r = self._c.execute("SELECT * FROM host_taints WHERE host = ?", (host,)).fetchone()
        return TaintRow(r["host"], r["at"], r["build_id"], r["source"], r["reason"]) if r else None

    def list_taints(self) -> list[TaintRow]:
        rows = self._c.execute("SELECT * FROM host_taints ORDER BY host").fetchall()
        return [TaintRow(r["host"], r["at"], r["build_id"], r["source"], r["reason"]) for r in rows]

    def clear_taint(self, host: str, at: float | None = None) -> bool:
        """End the host's taint; with ``at``, only the taint that began then (one read earlier in a
        transaction without the write lock: a taint that replaced it meanwhile stays)."""
        if at is None:
            return self._c.execute("DELETE FROM host_taints WHERE host = ?", (host,)).rowcount == 1
        return self._c.execute("DELETE FROM host_taints WHERE host = ? AND at = ?", (host, at)).rowcount == 1

    def add_grant(self, host: str, mac: str, principal: str, user: str, reason: str, issued_at: float,
                  expires_at: float, fingerprint: str, key_id: str) -> int:
        """Record a break-glass grant before its certificate is signed; returns its id, the certificate serial."""
        cur = self._c.execute(
            "INSERT INTO breakglass_grants (host, mac, principal, \"user\", reason, issued_at, expires_at, "
            "fingerprint, key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (host, mac, principal, user, reason, issued_at, expires_at, fingerprint, key_id))
        return int(cur.fetchone()["id"])

    def set_grant_key_id(self, serial: int, key_id: str) -> None:
        self._c.execute("UPDATE breakglass_grants SET key_id = ? WHERE id = ?", (key_id, serial))

    def get_grant(self, serial: int) -> GrantRow | None:
        r = self._c.execute("SELECT * FROM breakglass_grants WHERE id = ?", (serial,)).fetchone()
        return _grant(r) if r else None

    def list_grants(self, host: str | None = None, limit: int = 500) -> list[GrantRow]:
        if host is None:
            rows = self._c.execute("SELECT * FROM breakglass_grants ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._c.execute("SELECT * FROM breakglass_grants WHERE host = ? ORDER BY id DESC LIMIT ?",
                                   (host, limit))
        return [_grant(r) for r in rows.fetchall()]

    # ---- unknown machines ----
    def record_unknown(self, mac: str, at: float, remote_addr: str | None) -> None:
        self._c.execute(
            "INSERT INTO unknown_machines (mac, first_seen, last_seen, seen_count, remote_addr) VALUES (?, ?, ?, 1, ?) "
            "ON CONFLICT (mac) DO UPDATE SET last_seen = excluded.last_seen, "
            "seen_count = unknown_machines.seen_count + 1, remote_addr = excluded.remote_addr",
            (mac, at, at, remote_addr),
        )

    def list_unknown(self) -> list[UnknownMachineRow]:
        rows = self._c.execute("SELECT * FROM unknown_machines ORDER BY last_seen DESC").fetchall()
        return [UnknownMachineRow(r["mac"], r["first_seen"], r["last_seen"], r["seen_count"], r["remote_addr"])
                for r in rows]

    # ---- tokens ----
    def use_nonce(self, nonce: str, mac: str, at: float) -> bool:
        """Mark a token nonce used; False when it was used before (a replay)."""
        cur = self._c.execute("INSERT INTO used_tokens (nonce, mac, used_at) VALUES (?, ?, ?) "
                              "ON CONFLICT (nonce) DO NOTHING",
                              (nonce, mac, at))
        return cur.rowcount == 1

    # ---- boot events (an append-only feed a rollout can follow by id) ----
    def add_event(self, kind: str, at: float, mac: str | None = None, host: str | None = None,
                  build_id: str | None = None, detail: str = "") -> int:
        cur = self._c.execute(
            "INSERT INTO boot_events (at, kind, mac, host, build_id, detail) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (at, kind, mac, host, build_id, detail))
        return int(cur.fetchone()["id"])

    def events_after(self, after_id: int, kinds: Sequence[str] | None = None, limit: int = 1000) -> list[BootEventRow]:
        q = "SELECT * FROM boot_events WHERE id > ?"
        params: list[object] = [after_id]
        if kinds:
            q += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            params.extend(kinds)
        rows = self._c.execute(q + " ORDER BY id LIMIT ?", [*params, limit]).fetchall()
        return [BootEventRow(r["id"], r["at"], r["kind"], r["mac"], r["host"], r["build_id"], r["detail"])
                for r in rows]

    # ---- boot evidence: tokens as issued, attempts armed by a reimage ----
    def insert_token(self, row: TokenRow) -> None:
        self._c.execute(
            "INSERT INTO boot_tokens (nonce, mac, host, build_id, attempt, issued_at, issued_to, used_at, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.nonce, row.mac, row.host, row.build_id, row.attempt, row.issued_at, row.issued_to, row.used_at,
             row.source))

    def get_token(self, nonce: str) -> TokenRow | None:
        r = self._c.execute("SELECT * FROM boot_tokens WHERE nonce = ?", (nonce,)).fetchone()
        return TokenRow(r["nonce"], r["mac"], r["host"], r["build_id"], r["attempt"], r["issued_at"],
                        r["issued_to"], r["used_at"], r["source"]) if r else None

    def spend_token(self, nonce: str, at: float) -> bool:
        """Mark a token used; False when it was used before (a replay) or never issued."""
        cur = self._c.execute("UPDATE boot_tokens SET used_at = ? WHERE nonce = ? AND used_at IS NULL", (at, nonce))
        return cur.rowcount == 1

    def arm_attempt(self, host: str, attempt: str, build_id: str, at: float, expires_at: float) -> None:
        self._c.execute(
            "INSERT INTO boot_attempts (host, attempt, build_id, armed_at, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (host) DO UPDATE SET attempt = excluded.attempt, build_id = excluded.build_id, "
            "armed_at = excluded.armed_at, expires_at = excluded.expires_at, fetches = 0, fetched_from = '', "
            "contested_at = NULL, disarmed_at = NULL",
            (host, attempt, build_id, at, expires_at))

    def get_attempt(self, host: str) -> AttemptRow | None:
        r = self._c.execute("SELECT * FROM boot_attempts WHERE host = ?", (host,)).fetchone()
        return AttemptRow(r["host"], r["attempt"], r["build_id"], r["armed_at"], r["expires_at"], r["fetches"],
                          r["fetched_from"], r["contested_at"], r["disarmed_at"]) if r else None

    def count_fetch(self, host: str, attempt: str, addr: str) -> int:
        """Count one boot-script fetch for the armed attempt; returns how many there were in all."""
        self._c.execute(
            "UPDATE boot_attempts SET fetches = fetches + 1, "
            "fetched_from = CASE WHEN fetched_from = '' THEN ? ELSE fetched_from || ',' || ? END "
            "WHERE host = ? AND attempt = ?", (addr, addr, host, attempt))
        r = self._c.execute("SELECT fetches FROM boot_attempts WHERE host = ? AND attempt = ?",
                            (host, attempt)).fetchone()
        return int(r["fetches"]) if r else 0

    def contest_attempt(self, host: str, attempt: str, at: float) -> None:
        self._c.execute("UPDATE boot_attempts SET contested_at = COALESCE(contested_at, ?) "
                        "WHERE host = ? AND attempt = ?", (at, host, attempt))

    def disarm_attempt(self, host: str, attempt: str, at: float) -> None:
        self._c.execute("UPDATE boot_attempts SET disarmed_at = COALESCE(disarmed_at, ?) "
                        "WHERE host = ? AND attempt = ?", (at, host, attempt))

    # ---- promotion gates: evidence recorded per build ----
    def record_gate(self, image: str, build_id: str, gate: str, passed: bool, at: float, detail: str = "") -> None:
        self._c.execute(
            "INSERT INTO build_gates (image, build_id, gate, passed, at, detail) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (image, build_id, gate) DO UPDATE SET passed = excluded.passed, at = excluded.at, "
            "detail = excluded.detail", (image, build_id, gate, int(passed), at, detail))

    def gate_passed(self, image: str, build_id: str, gate: str) -> bool:
        r = self._c.execute("SELECT passed AS passed FROM build_gates WHERE image = ? AND build_id = ? AND gate = ?",
                            (image, build_id, gate)).fetchone()
        return bool(r and r["passed"])

    def count_soaked_hosts(self, build_id: str, observed_before: float) -> int:
        """Hosts that report ``build_id`` without drift and have run it since before ``observed_before``."""
        r = self._c.execute("SELECT COUNT(*) AS n FROM hosts WHERE observed_build = ? AND observed_since <= ? "
                            "AND drift = '[]'", (build_id, observed_before)).fetchone()
        return int(r["n"])

    # ---- retention: each call deletes at most ``limit`` rows, so one transaction never holds the lock long ----
    def prune_spent_tokens(self, used_before: float, limit: int) -> int:
        """Delete tokens spent before ``used_before`` (a replay of one is still refused: never issued)."""
        cur = self._c.execute(
            "DELETE FROM boot_tokens WHERE nonce IN (SELECT nonce FROM boot_tokens "
            "WHERE used_at IS NOT NULL AND used_at < ? LIMIT ?)", (used_before, limit))
        legacy = self._c.execute(
            "DELETE FROM used_tokens WHERE nonce IN (SELECT nonce FROM used_tokens WHERE used_at < ? LIMIT ?)",
            (used_before, limit))
        return max(cur.rowcount, 0) + max(legacy.rowcount, 0)

    def prune_expired_tokens(self, issued_before: float, limit: int) -> int:
        """Delete unspent tokens issued before ``issued_before`` (expired: refused on their time alone)."""
        cur = self._c.execute(
            "DELETE FROM boot_tokens WHERE nonce IN (SELECT nonce FROM boot_tokens "
            "WHERE used_at IS NULL AND issued_at < ? LIMIT ?)", (issued_before, limit))
        return max(cur.rowcount, 0)

    def prune_events(self, before: float, limit: int) -> int:
        """Delete the oldest boot events recorded before ``before`` (ids are never reused: feeds stay valid)."""
        cur = self._c.execute(
            "DELETE FROM boot_events WHERE id IN (SELECT id FROM boot_events WHERE at < ? ORDER BY id LIMIT ?)",
            (before, limit))
        return max(cur.rowcount, 0)

    def prune_unknown_machines(self, last_seen_before: float, limit: int) -> int:
        cur = self._c.execute(
            "DELETE FROM unknown_machines WHERE mac IN (SELECT mac FROM unknown_machines WHERE last_seen < ? "
            "LIMIT ?)", (last_seen_before, limit))
        return max(cur.rowcount, 0)

    def oldest_active_attempt(self, now: float) -> float | None:
        """When the oldest reimage attempt still armed at ``now`` was armed (its controller may be waiting)."""
        r = self._c.execute("SELECT MIN(armed_at) AS armed FROM boot_attempts WHERE disarmed_at IS NULL "
                            "AND expires_at > ?", (now,)).fetchone()
        return float(r["armed"]) if r and r["armed"] is not None else None

    def count_rows(self) -> dict[str, int]:
        """Rows in each table the boot server grows (for tests, metrics and sizing)."""
        tables = ("boot_tokens", "boot_events", "used_tokens", "unknown_machines", "hosts")
        return {t: int(self._c.execute(f"SELECT COUNT(*) AS n FROM {t}").fetchone()["n"]) for t in tables}  # noqa: S608

    # ---- audit ----
    def add_audit(self, at: float, user: str, action: str, subject: str, reason: str = "", detail: str = "") -> int:
        cur = self._c.execute("INSERT INTO audit_log (at, \"user\", action, subject, reason, detail) "
                              "VALUES (?, ?, ?, ?, ?, ?) RETURNING id", (at, user, action, subject, reason, detail))
        return int(cur.fetchone()["id"])

    def list_audit(self, subject: str | None = None, limit: int = 200) -> list[AuditRow]:
        if subject is None:
            rows = self._c.execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._c.execute("SELECT * FROM audit_log WHERE subject = ? ORDER BY id DESC LIMIT ?",
                                   (subject, limit))
        return [AuditRow(r["id"], r["at"], r["user"], r["action"], r["subject"], r["reason"], r["detail"])
                for r in rows.fetchall()]

    def last_event_before(self, at: float) -> int:
        """The id of the newest boot event older than ``at`` (0 when none): a feed cursor."""
        r = self._c.execute("SELECT COALESCE(MAX(id), 0) AS last_id FROM boot_events WHERE at < ?", (at,)).fetchone()
        return int(r["last_id"])

    # ---- the reimage journal ----
    def create_run(self, run_id: str, at: float, user: str, pattern: str, image: str, target_build: str,
                   plan: dict[str, Any], status: str) -> None:
        self._c.execute(
            "INSERT INTO reimage_runs (id, created_at, updated_at, \"user\", pattern, image, target_build, plan, "
            "status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, at, at, user, pattern, image, target_build, json.dumps(plan, sort_keys=True), status),
        )

    def set_run_status(self, run_id: str, status: str, summary: str, at: float) -> None:
        self._c.execute("UPDATE reimage_runs SET status = ?, summary = ?, updated_at = ? WHERE id = ?",
                        (status, summary, at, run_id))

    def record_steps(self, run_id: str, steps: Sequence[NewStep], at: float) -> list[int]:
        """Append journal entries (one transaction: the caller's); returns their ids."""
        ids = []
        for s in steps:
            cur = self._c.execute(
                "INSERT INTO reimage_steps (run_id, host, wave, attempt, step, phase, at, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (run_id, s.host, s.wave, s.attempt, s.step, s.phase, at, s.detail),
            )
            ids.append(int(cur.fetchone()["id"]))
        self._c.execute("UPDATE reimage_runs SET updated_at = ? WHERE id = ?", (at, run_id))
        return ids

    def get_run(self, run_id: str) -> RunRow | None:
        r = self._c.execute("SELECT * FROM reimage_runs WHERE id = ?", (run_id,)).fetchone()
        return _run(r) if r else None

    def list_runs(self, limit: int = 50) -> list[RunRow]:
        rows = self._c.execute("SELECT * FROM reimage_runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [_run(r) for r in rows]

    def last_step_phases(self) -> dict[str, str]:
        """Each host's most recent reimage step phase (intent, done, failed), over all runs."""
        rows = self._c.execute(
            "SELECT s.host AS host, s.phase AS phase FROM reimage_steps s JOIN "
            "(SELECT host, MAX(id) AS id FROM reimage_steps GROUP BY host) m ON s.id = m.id").fetchall()
        return {r["host"]: r["phase"] for r in rows}

    def run_steps(self, run_id: str, host: str | None = None) -> list[StepRow]:
        if host is None:
            rows = self._c.execute("SELECT * FROM reimage_steps WHERE run_id = ? ORDER BY id", (run_id,))
        else:
            rows = self._c.execute("SELECT * FROM reimage_steps WHERE run_id = ? AND host = ? ORDER BY id",
                                   (run_id, host))
        return [_step(r) for r in rows.fetchall()]

    # ---- host leases ----
    def get_leases(self, hosts: Sequence[str]) -> list[LeaseRow]:
        if not hosts:
            return []
        marks = ", ".join("?" for _ in hosts)  # placeholders only: the names travel as parameters
        rows = self._c.execute(f"SELECT * FROM host_leases WHERE host IN ({marks}) ORDER BY host",  # noqa: S608
                               list(hosts)).fetchall()
        return [LeaseRow(r["host"], r["run_id"], r["holder"], r["acquired_at"], r["expires_at"]) for r in rows]

    def put_leases(self, hosts: Sequence[str], run_id: str, holder: str, at: float, expires_at: float) -> None:
        self._c.executemany(
            "INSERT INTO host_leases (host, run_id, holder, acquired_at, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (host) DO UPDATE SET run_id = excluded.run_id, holder = excluded.holder, "
            "acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
            [(h, run_id, holder, at, expires_at) for h in hosts])

    def renew_leases(self, holder: str, expires_at: float) -> int:
        """Extend every lease ``holder`` still has; how many that is."""
        cur = self._c.execute("UPDATE host_leases SET expires_at = ? WHERE holder = ?", (expires_at, holder))
        return int(cur.rowcount)

    def release_leases(self, holder: str) -> None:
        self._c.execute("DELETE FROM host_leases WHERE holder = ?", (holder,))

    # ---- whole tables (golden state migrate) ----
    # ---- secrets shared by every boot server replica ----
    def create_secret(self, name: str, value: str, at: float) -> None:
        """Store ``value`` under ``name`` unless one is there already (the first writer wins)."""
        self._c.execute("INSERT INTO shared_secrets (name, value, created_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (name) DO NOTHING", (name, value, at))

    def get_secret(self, name: str) -> str | None:
        r = self._c.execute("SELECT value FROM shared_secrets WHERE name = ?", (name,)).fetchone()
        return str(r["value"]) if r else None

    def nonempty_tables(self) -> list[str]:
        return [t for t in TABLES
                if self._c.execute(f"SELECT EXISTS (SELECT 1 FROM {_table(t)}) AS present")  # noqa: S608
                .fetchone()["present"]]

    def dump_table(self, table: str) -> list[dict[str, Any]]:
        """Every row of ``table`` as {column: value}, in its first column's order."""
        return [{k: r[k] for k in r.keys()}  # sqlite3.Row iterates values, not keys
                for r in self._c.execute(f"SELECT * FROM {_table(table)} ORDER BY 1").fetchall()]  # noqa: S608

    def load_table(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Insert ``rows`` (as ``dump_table`` gives them) with their ids as they are."""
        if not rows:
            return
        cols = [_column(c) for c in rows[0]]
        self._c.executemany(
            f"INSERT INTO {_table(table)} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",  # noqa: S608
            [tuple(r.values()) for r in rows])


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def _table(name: str) -> str:
    """A table name we may put into SQL text: one of ours, nothing else (hence the S608 waivers above)."""
    if name not in TABLES:
        raise ValueError(f"not a golden state table: {name!r}")
    return name


def _column(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a column name: {name!r}")
    return f'"{name}"'  # quoted: "user" is a reserved word in PostgreSQL


class StateDB(ABC):
    """The state database, whichever engine holds it. Callers use only these methods and ``Repo``.

    ``write()`` holds the database's one write lock from its first statement to its commit, so a
    command's read-modify-write never acts on a stale read; ``read()`` is a consistent snapshot.
    """

    @property
    @abstractmethod
    def where(self) -> str:
        """What messages name: a file path, or a URL with its password redacted."""

    @abstractmethod
    def write(self) -> AbstractContextManager[Repo]: ...

    def write_rows(self) -> AbstractContextManager[Repo]:
        """A write transaction for the boot hot path whose statements are each atomic on the rows they
        touch (a conditional UPDATE that reports whether it won, an upsert, an append): an engine
        with row locks runs these side by side instead of queueing them behind the one write lock.
        Callers must not act on a value read earlier in the block unless a row lock protects it.
        """
        return self.write()

    @abstractmethod
    def read(self) -> AbstractContextManager[Repo]: ...

    @abstractmethod
    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]: ...

    @abstractmethod
    def close(self) -> None: ...


class SQLiteStateDB(StateDB):
    """One state database file. Thread-safe: each thread gets its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        # Writers of one process queue here rather than in SQLite's busy handler, which polls with
        # sleeps of up to 100 ms: with a few boot-server threads writing at once that was most of
        # a boot script's latency. Other processes still meet SQLite's lock (and busy_timeout).
        self._write_lock = threading.Lock()
        self._pid = os.getpid()
        self._generation = 0  # bumped to make every thread reopen its connection (see _read_only)
        private_dir(path.parent)  # the key and every nonce live here: 0700, the files 0600 (state.private)
        private_db(path)
        self.read_only = not writable(path)
        if self.read_only:
            log.warning("golden: the state database %s is read-only: reading it as it is, writes will fail", path)
        self.migrate(MIGRATIONS)

    @property
    def where(self) -> str:
        return str(self.path)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "generation", 0) != self._generation:
            conn.close()  # opened before the database became read-only
            conn = None
        if conn is None:
            try:
                conn = open_read_only(self.path) if self.read_only else self._open()
            except sqlite3.Error as exc:
                raise StateError(f"cannot open the state database {self.path}: {exc}",
                                 hint="check the path and its permissions (settings home)") from None
            self._local.conn, self._local.generation = conn, self._generation
        return conn

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves, so the write lock is taken when we say.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _went_read_only(self) -> None:
        """The files or their folder stopped being writable (read-only mount, chattr +i): from now on every
        thread reads through an immutable connection, which maps no shared memory that could SIGBUS.
        Checked (a few access(2) calls) before every transaction: the SIGBUS comes on the first touch."""
        if self.read_only or writable(self.path):
            return
        self.read_only = True
        self._generation += 1
        log.warning("golden: the state database %s became read-only: reading it as it is, writes will fail",
                    self.path)

    def size_bytes(self) -> int:
        """Pages in use by the database file, in bytes (free pages from pruning are reused, not counted)."""
        conn = self._conn()
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])

    def file_bytes(self) -> int:
        """The database file and its write-ahead log on disk."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def write(self) -> Iterator[Repo]:
        """A write transaction holding the database's write lock from its first statement."""
        if os.getpid() != self._pid:  # a forked child (BMC workers): the parent's lock may have been held
            self._write_lock, self._pid = threading.Lock(), os.getpid()
        with self._write_lock:
            yield from self._write()

    def _write(self) -> Iterator[Repo]:
        self._went_read_only()
        if self.read_only:
            raise StateWriteError(f"state database is read-only: {self.path}",
                                  hint="check that file system and the file's permissions")
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._went_read_only()
            raise _write_error(self.path, exc) from None
        try:
            yield Repo(conn)
        except sqlite3.Error as exc:
            _rollback(conn)
            self._went_read_only()
            raise _write_error(self.path, exc) from None
        except BaseException:
            _rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise _write_error(self.path, exc) from None

    @contextmanager
    def read(self) -> Iterator[Repo]:
        """A consistent snapshot for reading (several queries see the same state)."""
        self._went_read_only()  # before the connection touches a WAL index that can no longer grow
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield Repo(conn)
        finally:
            conn.execute("ROLLBACK")

    def _applied(self, conn: sqlite3.Connection) -> set[str]:
        try:
            return {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
        except sqlite3.OperationalError:
            return set()  # a new database: no table yet

    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
        """Apply the named migrations not applied yet, in order; return the names applied.

        An up-to-date database is only read, so a read-only or full one still opens (and serves boots).
        """
        conn = self._conn()
        if all(m.name in self._applied(conn) for m in migrations):
            return []
        refuse_foreign(conn, self.path)
        applied: list[str] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)")
                done = self._applied(conn)  # again, under the lock: another process may have just migrated
                for m in migrations:
                    if m.name in done:
                        continue
                    for stmt in split_statements(m.sql):
                        conn.execute(stmt)
                    conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                                 (m.name, time.time()))
                    applied.append(m.name)
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"cannot migrate the state database {self.path}: {exc}") from None
        return applied


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass
