"""Whole tables (``golden state migrate``) and the secrets every boot-server replica shares."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from toolkit.state.room import Room
from toolkit.state.schema import TABLES


class Tables(Room):
    """Queries on whole tables and the shared secrets."""

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
