"""Forked worker processes (the BMC pool's): started here, as every process golden starts is in core.

Fork, not spawn: a worker's work is a closure (a BMC operation) and need not pickle. Shared
counters and arrays come from the same context, so they are shared with the children.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

_CTX = multiprocessing.get_context("fork")


def shared_counter(start: int = 0) -> Any:
    """A 64-bit integer every worker sees, with its own lock (``get_lock()``)."""
    return _CTX.Value("q", start)


def shared_ints(values: list[int]) -> Any:
    """An array of integers every worker sees, without a lock (each slot has one writer)."""
    return _CTX.Array("i", values, lock=False)


def fork_workers(n: int, work: Callable[[int, Any], None]) -> list[tuple[Any, Any]]:
    """Start ``n`` forked children, child ``c`` running ``work(c, writer)`` with the write end of its
    own pipe; return each one's (reader, process), in order."""
    children = []
    for c in range(n):
        reader, writer = _CTX.Pipe(duplex=False)
        proc = _CTX.Process(target=work, args=(c, writer), daemon=True)
        proc.start()
        writer.close()
        children.append((reader, proc))
    return children
