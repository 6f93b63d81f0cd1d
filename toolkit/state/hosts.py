"""Hosts (desired, served and observed builds), their drift paths, and machines nobody registered."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from toolkit.state.room import Room


@dataclass(frozen=True)
class HostRow:
    """A host's state: desired, served and observed build, its last report and drift."""
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
    """A MAC that asked for a boot script without being in the inventory."""
    mac: str
    first_seen: float
    last_seen: float
    seen_count: int
    remote_addr: str | None


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
    # The machine's hardware facts (toolkit.fleet.hardware's canonical form); None from agents that send none.
    hardware: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    # UEFI Secure Boot as the node's firmware says (efivars); None: not UEFI, or an agent that does not say.
    secure_boot: bool | None = field(default=None, compare=False, hash=False)
    # The disk slot the node runs from (golden.slot= of its boot entry: "a" or "b"); None: a RAM boot.
    slot: str | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class DriftRow:
    """One path a host's overlay holds outside its allowlist, since when."""

    host: str
    path: str
    kind: str  # added | modified | deleted | changed
    build_id: str
    first_seen: float
    last_seen: float


class Hosts(Room):
    """Queries on hosts, their drift paths and unknown machines."""

    def get_host(self, name: str) -> HostRow | None:
        """The host named ``name``, or None."""
        r = self._c.execute("SELECT * FROM hosts WHERE name = ?", (name,)).fetchone()
        return _host(r) if r else None

    def get_host_by_mac(self, mac: str) -> HostRow | None:
        """The host with ``mac``, or None."""
        r = self._c.execute("SELECT * FROM hosts WHERE mac = ?", (mac,)).fetchone()
        return _host(r) if r else None

    def list_hosts(self) -> list[HostRow]:
        """Every host, by name."""
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
        """Set the build the host should run (None: none)."""
        self._c.execute("UPDATE hosts SET desired_image = ?, desired_build = ?, desired_at = ? WHERE name = ?",
                        (image, build_id, at, name))

    def set_served(self, name: str, build_id: str, at: float) -> None:
        """Record the build last served to the host."""
        self._c.execute("UPDATE hosts SET served_build = ?, served_at = ? WHERE name = ?", (build_id, at, name))

    def set_observed(self, name: str, report: ObservedReport, at: float) -> None:
        """Set what the host's report says it runs; ``observed_since`` moves only with the build."""
        self._c.execute(
            "UPDATE hosts SET "
            "observed_since = CASE WHEN observed_build IS NOT DISTINCT FROM ? THEN observed_since ELSE ? END, "
            "observed_image = ?, observed_build = ?, booted_at = ?, last_report_at = ?, hostname = ?, "
            "uptime_s = ?, drift = ?, agent_version = ? WHERE name = ?",
            (report.build_id, at, report.image, report.build_id, report.booted_at, at, report.hostname,
             report.uptime_s, json.dumps(list(report.drift)), report.agent_version, name),
        )

    def delete_host(self, name: str) -> None:
        """Forget the host."""
        self._c.execute("DELETE FROM hosts WHERE name = ?", (name,))

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
        """Drifted paths, of one host or all."""
        if host is None:
            rows = self._c.execute("SELECT * FROM drift_paths ORDER BY host, path")
        else:
            rows = self._c.execute("SELECT * FROM drift_paths WHERE host = ? ORDER BY path", (host,))
        return [DriftRow(r["host"], r["path"], r["kind"], r["build_id"], r["first_seen"], r["last_seen"])
                for r in rows.fetchall()]

    def record_unknown(self, mac: str, at: float, remote_addr: str | None) -> None:
        """Count one boot-script request from an unknown MAC."""
        self._c.execute(
            "INSERT INTO unknown_machines (mac, first_seen, last_seen, seen_count, remote_addr) VALUES (?, ?, ?, 1, ?) "
            "ON CONFLICT (mac) DO UPDATE SET last_seen = excluded.last_seen, "
            "seen_count = unknown_machines.seen_count + 1, remote_addr = excluded.remote_addr",
            (mac, at, at, remote_addr),
        )

    def list_unknown(self) -> list[UnknownMachineRow]:
        """Unknown machines, most recently seen first."""
        rows = self._c.execute("SELECT * FROM unknown_machines ORDER BY last_seen DESC").fetchall()
        return [UnknownMachineRow(r["mac"], r["first_seen"], r["last_seen"], r["seen_count"], r["remote_addr"])
                for r in rows]


def _host(r: sqlite3.Row) -> HostRow:
    return HostRow(
        name=r["name"], mac=r["mac"], desired_image=r["desired_image"], desired_build=r["desired_build"],
        desired_at=r["desired_at"], served_build=r["served_build"], served_at=r["served_at"],
        observed_image=r["observed_image"], observed_build=r["observed_build"],
        observed_since=r["observed_since"], booted_at=r["booted_at"], last_report_at=r["last_report_at"],
        hostname=r["hostname"], uptime_s=r["uptime_s"], drift=tuple(json.loads(r["drift"] or "[]")),
        agent_version=r["agent_version"],
    )
