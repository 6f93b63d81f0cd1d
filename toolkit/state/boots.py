"""Boot tokens, reimage attempts armed on hosts, the boot-event feed, and their retention."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from toolkit.state.room import Room

BOOT_REFUSED = "boot-refused"  # event: the firmware refused an attempt's signed image (only ever fails it)

@dataclass(frozen=True)
class BootEventRow:
    """One boot event (a script served, a report accepted or refused, ...), in feed order by ``id``."""
    id: int
    at: float
    kind: str
    mac: str | None
    host: str | None
    build_id: str | None
    detail: str


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
        """True while the attempt is armed and not expired."""
        return self.disarmed_at is None and now < self.expires_at


class Boots(Room):
    """Queries on boot tokens, armed attempts, boot events and their retention."""

    def use_nonce(self, nonce: str, mac: str, at: float) -> bool:
        """Mark a token nonce used; False when it was used before (a replay)."""
        cur = self._c.execute("INSERT INTO used_tokens (nonce, mac, used_at) VALUES (?, ?, ?) "
                              "ON CONFLICT (nonce) DO NOTHING",
                              (nonce, mac, at))
        return cur.rowcount == 1

    # Boot events: an append-only feed a rollout can follow by id.
    def add_event(self, kind: str, at: float, mac: str | None = None, host: str | None = None,
                  build_id: str | None = None, detail: str = "") -> int:
        """Append a boot event; returns its id (the feed's cursor)."""
        cur = self._c.execute(
            "INSERT INTO boot_events (at, kind, mac, host, build_id, detail) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (at, kind, mac, host, build_id, detail))
        return int(cur.fetchone()["id"])

    def events_after(self, after_id: int, kinds: Sequence[str] | None = None, limit: int = 1000) -> list[BootEventRow]:
        """Boot events after ``after_id``, oldest first, optionally of some kinds only."""
        q = "SELECT * FROM boot_events WHERE id > ?"
        params: list[object] = [after_id]
        if kinds:
            q += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            params.extend(kinds)
        rows = self._c.execute(q + " ORDER BY id LIMIT ?", [*params, limit]).fetchall()
        return [BootEventRow(r["id"], r["at"], r["kind"], r["mac"], r["host"], r["build_id"], r["detail"])
                for r in rows]

    def last_event_before(self, at: float) -> int:
        """The id of the newest boot event older than ``at`` (0 when none): a feed cursor."""
        r = self._c.execute("SELECT COALESCE(MAX(id), 0) AS last_id FROM boot_events WHERE at < ?", (at,)).fetchone()
        return int(r["last_id"])

    def insert_token(self, row: TokenRow) -> None:
        """Record a boot token as issued."""
        self._c.execute(
            "INSERT INTO boot_tokens (nonce, mac, host, build_id, attempt, issued_at, issued_to, used_at, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.nonce, row.mac, row.host, row.build_id, row.attempt, row.issued_at, row.issued_to, row.used_at,
             row.source))

    def get_token(self, nonce: str) -> TokenRow | None:
        """The token issued with ``nonce``, or None."""
        r = self._c.execute("SELECT * FROM boot_tokens WHERE nonce = ?", (nonce,)).fetchone()
        return TokenRow(r["nonce"], r["mac"], r["host"], r["build_id"], r["attempt"], r["issued_at"],
                        r["issued_to"], r["used_at"], r["source"]) if r else None

    def spend_token(self, nonce: str, at: float) -> bool:
        """Mark a token used; False when it was used before (a replay) or never issued."""
        cur = self._c.execute("UPDATE boot_tokens SET used_at = ? WHERE nonce = ? AND used_at IS NULL", (at, nonce))
        return cur.rowcount == 1

    def arm_attempt(self, host: str, attempt: str, build_id: str, at: float, expires_at: float) -> None:
        """Arm a reimage attempt on ``host`` (replacing any earlier one) until ``expires_at``."""
        self._c.execute(
            "INSERT INTO boot_attempts (host, attempt, build_id, armed_at, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (host) DO UPDATE SET attempt = excluded.attempt, build_id = excluded.build_id, "
            "armed_at = excluded.armed_at, expires_at = excluded.expires_at, fetches = 0, fetched_from = '', "
            "contested_at = NULL, disarmed_at = NULL",
            (host, attempt, build_id, at, expires_at))

    def get_attempt(self, host: str) -> AttemptRow | None:
        """The attempt armed on ``host``, or None."""
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
        """Mark the attempt contested (a second boot-script fetch); the first time counts."""
        self._c.execute("UPDATE boot_attempts SET contested_at = COALESCE(contested_at, ?) "
                        "WHERE host = ? AND attempt = ?", (at, host, attempt))

    def disarm_attempt(self, host: str, attempt: str, at: float) -> None:
        """End the attempt; the first time counts."""
        self._c.execute("UPDATE boot_attempts SET disarmed_at = COALESCE(disarmed_at, ?) "
                        "WHERE host = ? AND attempt = ?", (at, host, attempt))

    # Retention: each call deletes at most ``limit`` rows, so one transaction never holds the lock long.
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
        """Delete unknown machines last seen before ``last_seen_before``; how many."""
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
