"""Channels, their history and the promotion gates recorded per build."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from toolkit.state.room import Room


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


class Channels(Room):
    """Queries on channels, their history and the promotion gates."""

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


def _history(r: sqlite3.Row) -> HistoryRow:
    return HistoryRow(
        id=r["id"], image=r["image"], channel=r["channel"], action=r["action"], from_build=r["from_build"],
        to_build=r["to_build"], user=r["user"], at=r["at"], reason=r["reason"], forced=bool(r["forced"]),
    )
