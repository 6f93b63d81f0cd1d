"""What every room of the state layer stands on: a connection that takes ``?`` placeholders."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol


class Connection(Protocol):
    """What ``Repo`` needs of a connection: ``execute`` with ``?`` placeholders, rows readable by column name."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Any: ...


class Room:
    """The queries of one family of tables, run on the transaction's connection."""

    def __init__(self, conn: Connection) -> None:
        self._c = conn
