"""Boot evidence rooms of the state DB: verified observations, unverified ones, and counted noise.

- ``host_evidence``: the reimage attempt a host's verified build (``hosts.observed_build``) came
  from, so a contest that arrives after the report can take that build back.
- ``unverified_reports``: the last report per host that no live attempt vouches for (a boot outside
  any reimage, or anyone holding a token fetched outside one). Shown, never acted on.
- ``boot_noise``: unauthenticated requests (unknown MACs, refused reports) counted per kind, key
  (the client address) and hour, with a hard cap on keys, instead of a row each: 10,000 forged
  requests cost a few rows, not 10,000.

A room of ``Repo`` (``toolkit.state.repo``): the same connection and transaction, its own SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.state.room import Room

NOISE_WINDOW_S = 3600.0
NOISE_KEYS_PER_WINDOW = 256  # distinct keys per kind and window; past it one "(other)" row counts the rest
NOISE_MAX_ROWS = 20_000  # all windows together: past it every key counts under "(other)"
NOISE_OTHER = "(other)"
UNKNOWN_MACHINES_MAX = 2_000  # unknown MACs remembered one row each; past it only counted as noise


@dataclass(frozen=True)
class UnverifiedRow:
    """The last report of a host that no live reimage attempt vouched for."""

    host: str
    image: str
    build_id: str
    at: float
    addr: str
    count: int


@dataclass(frozen=True)
class NoiseRow:
    kind: str  # unknown-mac | reject:<RejectKind>
    key: str  # the client address, or "(other)" past the cap
    since: float  # the window's start
    count: int
    last_at: float
    detail: str  # the last one's MAC or reason


class EvidenceRoom(Room):
    """Queries on the evidence tables; one of ``Repo``'s rooms."""

    # ---- verified: which attempt a host's observed build rests on ----
    def record_verified(self, host: str, attempt: str, build_id: str, at: float) -> None:
        self._c.execute(
            "INSERT INTO host_evidence (host, attempt, build_id, at) VALUES (?, ?, ?, ?) ON CONFLICT (host) "
            "DO UPDATE SET attempt = excluded.attempt, build_id = excluded.build_id, at = excluded.at",
            (host, attempt, build_id, at))

    def forget_verified(self, host: str, attempt: str) -> bool:
        """Take back a build verified by ``attempt`` (contested after its report); True when there was one."""
        cur = self._c.execute("DELETE FROM host_evidence WHERE host = ? AND attempt = ?", (host, attempt))
        if cur.rowcount < 1:
            return False
        self._c.execute("UPDATE hosts SET observed_build = NULL, observed_image = NULL, observed_since = NULL "
                        "WHERE name = ?", (host,))
        return True

    def end_token_chains(self, host: str, at: float) -> int:
        """Spend every unspent re-report token of ``host``: the reports they would vouch for no longer count."""
        cur = self._c.execute("UPDATE boot_tokens SET used_at = ? WHERE host = ? AND used_at IS NULL "
                              "AND source <> 'boot'", (at, host))
        return max(cur.rowcount, 0)

    # ---- unverified observations ----
    def record_unverified(self, host: str, image: str, build_id: str, at: float, addr: str) -> None:
        self._c.execute(
            "INSERT INTO unverified_reports (host, image, build_id, at, addr, count) VALUES (?, ?, ?, ?, ?, 1) "
            "ON CONFLICT (host) DO UPDATE SET image = excluded.image, build_id = excluded.build_id, "
            "at = excluded.at, addr = excluded.addr, count = unverified_reports.count + 1",
            (host, image, build_id, at, addr))

    def get_unverified(self, host: str) -> UnverifiedRow | None:
        r = self._c.execute("SELECT * FROM unverified_reports WHERE host = ?", (host,)).fetchone()
        return UnverifiedRow(r["host"], r["image"], r["build_id"], r["at"], r["addr"], r["count"]) if r else None

    # ---- unauthenticated noise, counted ----
    def count_noise(self, kind: str, key: str, at: float, detail: str = "") -> None:
        """Count one unauthenticated request under (kind, key, its window); a new key past a cap is "(other)"."""
        since = at - at % NOISE_WINDOW_S
        if self._bump_noise(kind, key, since, at, detail):
            return
        if self._noise_full(kind, since):
            key = NOISE_OTHER
        self._c.execute(
            "INSERT INTO boot_noise (kind, key, since, count, last_at, detail) VALUES (?, ?, ?, 1, ?, ?) "
            "ON CONFLICT (kind, key, since) DO UPDATE SET count = boot_noise.count + 1, "
            "last_at = excluded.last_at, detail = excluded.detail", (kind, key, since, at, detail[:200]))

    def _bump_noise(self, kind: str, key: str, since: float, at: float, detail: str) -> bool:
        cur = self._c.execute("UPDATE boot_noise SET count = count + 1, last_at = ?, detail = ? "
                              "WHERE kind = ? AND key = ? AND since = ?", (at, detail[:200], kind, key, since))
        return bool(cur.rowcount and cur.rowcount > 0)

    def _noise_full(self, kind: str, since: float) -> bool:
        n = self._c.execute("SELECT COUNT(*) AS n FROM boot_noise WHERE kind = ? AND since = ?",
                            (kind, since)).fetchone()["n"]
        if int(n) >= NOISE_KEYS_PER_WINDOW:
            return True
        return int(self._c.execute("SELECT COUNT(*) AS n FROM boot_noise").fetchone()["n"]) >= NOISE_MAX_ROWS

    def list_noise(self, since: float = 0.0) -> list[NoiseRow]:
        rows = self._c.execute("SELECT * FROM boot_noise WHERE since >= ? ORDER BY since DESC, count DESC",
                               (since,)).fetchall()
        return [NoiseRow(r["kind"], r["key"], r["since"], r["count"], r["last_at"], r["detail"]) for r in rows]

    def prune_noise(self, before: float, limit: int) -> int:
        cur = self._c.execute(
            "DELETE FROM boot_noise WHERE (kind, key, since) IN (SELECT kind, key, since FROM boot_noise "
            "WHERE last_at < ? LIMIT ?)", (before, limit))
        return max(cur.rowcount, 0)

    def record_unknown_capped(self, mac: str, at: float, remote_addr: str) -> None:
        """An unknown machine's row (count, last seen), and a new one only while fewer than the cap exist."""
        cur = self._c.execute("UPDATE unknown_machines SET last_seen = ?, seen_count = seen_count + 1, "
                              "remote_addr = ? WHERE mac = ?", (at, remote_addr, mac))
        if cur.rowcount and cur.rowcount > 0:
            return
        n = self._c.execute("SELECT COUNT(*) AS n FROM unknown_machines").fetchone()["n"]
        if int(n) < UNKNOWN_MACHINES_MAX:
            self._c.execute("INSERT INTO unknown_machines (mac, first_seen, last_seen, seen_count, remote_addr) "
                            "VALUES (?, ?, ?, 1, ?) ON CONFLICT (mac) DO NOTHING", (mac, at, at, remote_addr))
