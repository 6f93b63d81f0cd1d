"""Who got in and who acted: logins, taints, break-glass grants and the audit log."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from toolkit.state.room import Room


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
class AuditRow:
    id: int
    at: float
    user: str
    action: str
    subject: str
    reason: str
    detail: str


class Access(Room):
    """Queries on logins, taints, break-glass grants and the audit log."""

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


def _grant(r: sqlite3.Row) -> GrantRow:
    return GrantRow(r["id"], r["host"], r["mac"], r["principal"], r["user"], r["reason"], r["issued_at"],
                    r["expires_at"], r["fingerprint"], r["key_id"])
