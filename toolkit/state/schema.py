"""The state database's schema: named migrations, applied once each, in order.

One list for every table golden keeps (channels, fleet, boot events, tokens, the reimage
journal), so a second backend applies exactly the same schema. A migration is a script of
statements split with ``sqlite3.complete_statement`` (never on every ``;``: a string literal or
a trigger body may hold one).

The migrations are written in SQLite's SQL; ``postgres_ddl`` and ``postgres_query`` are the one
place that text is translated for PostgreSQL (an identity column for AUTOINCREMENT, double
precision for REAL, ``%s`` for ``?``). Everything else is written in SQL both engines accept.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One named schema change, applied once, in order."""
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_channels", """
        CREATE TABLE channels (
            image      TEXT NOT NULL,
            channel    TEXT NOT NULL,
            build_id   TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (image, channel)
        );
        CREATE TABLE channel_history (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            image      TEXT NOT NULL,
            channel    TEXT NOT NULL,
            action     TEXT NOT NULL,
            from_build TEXT,
            to_build   TEXT NOT NULL,
            "user"     TEXT NOT NULL,
            at         REAL NOT NULL,
            reason     TEXT NOT NULL DEFAULT '',
            forced     INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX channel_history_by_channel ON channel_history (image, channel, id);
    """),
    Migration("0002_fleet", """
        CREATE TABLE hosts (
            name            TEXT PRIMARY KEY,
            mac             TEXT NOT NULL UNIQUE,
            desired_image   TEXT,
            desired_build   TEXT,
            desired_at      REAL,
            served_build    TEXT,
            served_at       REAL,
            observed_image  TEXT,
            observed_build  TEXT,
            observed_since  REAL,
            booted_at       TEXT,
            last_report_at  REAL,
            hostname        TEXT,
            uptime_s        REAL,
            drift           TEXT NOT NULL DEFAULT '[]',
            agent_version   TEXT
        );
        CREATE TABLE unknown_machines (
            mac         TEXT PRIMARY KEY,
            first_seen  REAL NOT NULL,
            last_seen   REAL NOT NULL,
            seen_count  INTEGER NOT NULL,
            remote_addr TEXT
        );
        CREATE TABLE used_tokens (
            nonce   TEXT PRIMARY KEY,
            mac     TEXT NOT NULL,
            used_at REAL NOT NULL
        );
        CREATE TABLE boot_events (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            at       REAL NOT NULL,
            kind     TEXT NOT NULL,
            mac      TEXT,
            host     TEXT,
            build_id TEXT,
            detail   TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX boot_events_by_mac ON boot_events (mac, id);
    """),
    Migration("0003_boot_evidence", """
        CREATE TABLE boot_tokens (
            nonce      TEXT PRIMARY KEY,
            mac        TEXT NOT NULL,
            host       TEXT NOT NULL,
            build_id   TEXT NOT NULL,
            attempt    TEXT NOT NULL DEFAULT '',
            issued_at  REAL NOT NULL,
            issued_to  TEXT NOT NULL DEFAULT '',
            used_at    REAL
        );
        CREATE TABLE boot_attempts (
            host         TEXT PRIMARY KEY,
            attempt      TEXT NOT NULL,
            build_id     TEXT NOT NULL,
            armed_at     REAL NOT NULL,
            expires_at   REAL NOT NULL,
            fetches      INTEGER NOT NULL DEFAULT 0,
            fetched_from TEXT NOT NULL DEFAULT '',
            contested_at REAL,
            disarmed_at  REAL
        );
        CREATE TABLE audit_log (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            at      REAL NOT NULL,
            "user"  TEXT NOT NULL,
            action  TEXT NOT NULL,
            subject TEXT NOT NULL,
            reason  TEXT NOT NULL DEFAULT '',
            detail  TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX audit_log_by_subject ON audit_log (subject, id);
    """),
    Migration("0004_build_gates", """
        CREATE TABLE build_gates (
            image    TEXT NOT NULL,
            build_id TEXT NOT NULL,
            gate     TEXT NOT NULL,
            passed   INTEGER NOT NULL,
            at       REAL NOT NULL,
            detail   TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (image, build_id, gate)
        );
    """),
    Migration("0100_reimage_journal", """
        CREATE TABLE reimage_runs (
            id           TEXT PRIMARY KEY,
            created_at   REAL NOT NULL,
            updated_at   REAL NOT NULL,
            "user"       TEXT NOT NULL,
            pattern      TEXT NOT NULL,
            image        TEXT NOT NULL,
            target_build TEXT NOT NULL,
            plan         TEXT NOT NULL,
            status       TEXT NOT NULL,
            summary      TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE reimage_steps (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id   TEXT NOT NULL REFERENCES reimage_runs (id),
            host     TEXT NOT NULL,
            wave     INTEGER NOT NULL,
            attempt  INTEGER NOT NULL,
            step     TEXT NOT NULL,
            phase    TEXT NOT NULL,
            at       REAL NOT NULL,
            detail   TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX reimage_steps_by_run ON reimage_steps (run_id, host, id);
    """),
    # A host is leased to one controller driving one run; the lease lapses unless renewed, so a
    # dead controller's hosts free themselves and another controller can resume its run.
    Migration("0110_host_leases", """
        CREATE TABLE host_leases (
            host        TEXT PRIMARY KEY,
            run_id      TEXT NOT NULL,
            holder      TEXT NOT NULL,
            acquired_at REAL NOT NULL,
            expires_at  REAL NOT NULL
        );
        CREATE INDEX host_leases_by_holder ON host_leases (holder);
    """),
    # The retention pruner deletes by time; a token remembers whether a boot script or a report issued it.
    Migration("0120_retention", """
        CREATE INDEX boot_events_by_at ON boot_events (at);
        CREATE INDEX boot_tokens_by_issued ON boot_tokens (issued_at);
        CREATE INDEX boot_tokens_by_used ON boot_tokens (used_at);
        ALTER TABLE boot_tokens ADD COLUMN source TEXT NOT NULL DEFAULT 'boot';
    """),
    # Secrets every boot server replica must share (the boot-token HMAC key): in the database they
    # share, so a token one replica issued verifies at any other, on any host.
    Migration("0125_shared_secrets", """
        CREATE TABLE shared_secrets (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            created_at REAL NOT NULL
        );
    """),
    # Drift you can read (each path with its kind, first and last seen), logins the agents report,
    # taints (cleared only by a reimage) and break-glass grants (whose id is the certificate serial).
    Migration("0130_drift_access", """
        CREATE TABLE drift_paths (
            host       TEXT NOT NULL,
            path       TEXT NOT NULL,
            kind       TEXT NOT NULL,
            build_id   TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen  REAL NOT NULL,
            PRIMARY KEY (host, path)
        );
        CREATE TABLE host_logins (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            host        TEXT NOT NULL,
            at          TEXT NOT NULL,
            line        TEXT NOT NULL,
            login_user  TEXT NOT NULL,
            from_addr   TEXT NOT NULL,
            method      TEXT NOT NULL,
            serial      INTEGER,
            key_id      TEXT NOT NULL DEFAULT '',
            grant_id    INTEGER,
            build_id    TEXT,
            seen_at     REAL NOT NULL,
            UNIQUE (host, at, line)
        );
        CREATE INDEX host_logins_by_host ON host_logins (host, id);
        CREATE TABLE host_taints (
            host     TEXT PRIMARY KEY,
            at       REAL NOT NULL,
            build_id TEXT,
            source   TEXT NOT NULL,
            reason   TEXT NOT NULL
        );
        CREATE TABLE breakglass_grants (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            host        TEXT NOT NULL,
            mac         TEXT NOT NULL,
            principal   TEXT NOT NULL,
            "user"      TEXT NOT NULL,
            reason      TEXT NOT NULL,
            issued_at   REAL NOT NULL,
            expires_at  REAL NOT NULL,
            fingerprint TEXT NOT NULL,
            key_id      TEXT NOT NULL
        );
        CREATE INDEX breakglass_grants_by_host ON breakglass_grants (host, id);
    """),
    # Boot evidence (toolkit.state.evidence): the attempt a host's verified build came from, the last
    # unverified observation per host, and unauthenticated noise counted per key and window, not a row each.
    Migration("0140_evidence", """
        CREATE TABLE host_evidence (
            host     TEXT PRIMARY KEY,
            attempt  TEXT NOT NULL,
            build_id TEXT NOT NULL,
            at       REAL NOT NULL
        );
        CREATE TABLE unverified_reports (
            host     TEXT PRIMARY KEY,
            image    TEXT NOT NULL,
            build_id TEXT NOT NULL,
            at       REAL NOT NULL,
            addr     TEXT NOT NULL,
            count    INTEGER NOT NULL
        );
        CREATE TABLE boot_noise (
            kind    TEXT NOT NULL,
            key     TEXT NOT NULL,
            since   REAL NOT NULL,
            count   INTEGER NOT NULL,
            last_at REAL NOT NULL,
            detail  TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (kind, key, since)
        );
    """),
    # Hosts out of rotation (drained or being reimaged) per hook group: the budgets every controller sees.
    Migration("0150_host_rotation", """
        CREATE TABLE host_rotation (
            host   TEXT NOT NULL,
            grp    TEXT NOT NULL,
            run_id TEXT NOT NULL,
            state  TEXT NOT NULL,
            since  REAL NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (host, grp)
        );
        CREATE INDEX host_rotation_by_group ON host_rotation (grp, host);
    """),
    # Hardware facts per host (a row per distinct machine, not per boot) and unaccepted changes.
    Migration("0170_host_hardware", """
        CREATE TABLE host_hardware (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            host       TEXT NOT NULL,
            digest     TEXT NOT NULL,
            facts      TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen  REAL NOT NULL,
            build_id   TEXT NOT NULL DEFAULT '',
            changes    TEXT NOT NULL DEFAULT '[]'
        );
        CREATE INDEX host_hardware_by_host ON host_hardware (host, id);
        CREATE TABLE hw_marks (
            host    TEXT PRIMARY KEY,
            since   REAL NOT NULL,
            changes TEXT NOT NULL
        );
    """),
    # Hosts being retired (golden retire): cleaning, clean or clean-failed, with the last per-disk report.
    Migration("0190_host_cleaning", """
        CREATE TABLE host_cleaning (
            host    TEXT PRIMARY KEY,
            state   TEXT NOT NULL,
            since   REAL NOT NULL,
            attempt TEXT NOT NULL DEFAULT '',
            reason  TEXT NOT NULL DEFAULT '',
            disks   TEXT NOT NULL DEFAULT '[]'
        );
    """),
    # Disk hosts' A/B slots (install: disk): the running slot, the build in each, the slot being
    # tried under the boot counter, and the build whose boot failed last (a fall-back).
    Migration("0200_host_slots", """
        CREATE TABLE host_slots (
            host      TEXT PRIMARY KEY,
            active    TEXT,
            slot_a    TEXT,
            slot_b    TEXT,
            trying    TEXT,
            fell_back TEXT,
            at        REAL NOT NULL
        );
    """),
)

# Every table golden keeps, parents before children (``golden state migrate`` copies in this order),
# and those whose ``id`` the database numbers (a copy must move their counters past the copied ids).
TABLES: tuple[str, ...] = (
    "channels", "channel_history", "hosts", "unknown_machines", "used_tokens", "boot_events",
    "boot_tokens", "boot_attempts", "audit_log", "build_gates", "reimage_runs", "reimage_steps", "host_leases",
    "shared_secrets",
    "drift_paths", "host_logins", "host_taints", "breakglass_grants",
    "host_evidence", "unverified_reports", "boot_noise", "host_rotation", "host_hardware", "hw_marks",
    "host_cleaning", "host_slots",
)
NUMBERED_TABLES: tuple[str, ...] = ("channel_history", "boot_events", "audit_log", "reimage_steps", "host_logins",
                                    "breakglass_grants", "host_hardware")


def split_statements(script: str) -> list[str]:
    """The complete SQL statements of ``script``, in order (executescript() would commit our transaction)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip().rstrip(";").strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and sqlite3.complete_statement(buf + ";"):
        out.append(buf.strip())  # a last statement without its ';'
    elif buf.strip():
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buf.strip()[:60]!r}")
    return out


# SQLite's REAL is 8 bytes; PostgreSQL's is 4 (a timestamp would lose its seconds), hence double precision.
_PG_DDL = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b", re.I), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
)
_LITERAL_OR_MARK = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[?%]")


def postgres_ddl(statement: str) -> str:
    """A migration statement as PostgreSQL spells it."""
    for pattern, replacement in _PG_DDL:
        statement = pattern.sub(replacement, statement)
    return statement


def postgres_query(sql: str) -> str:
    """A query with ``?`` placeholders as psycopg takes it: ``%s`` for a ``?`` outside quotes, ``%%`` for ``%``.

    psycopg reads ``%`` everywhere, quoted or not, so every literal one is doubled.
    """
    def swap(m: re.Match[str]) -> str:
        token = m.group(0)
        return {"?": "%s", "%": "%%"}.get(token, token.replace("%", "%%"))
    return _LITERAL_OR_MARK.sub(swap, sql)
