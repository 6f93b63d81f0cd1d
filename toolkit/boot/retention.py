"""Bounded boot state: which tokens and boot events the boot server may forget, and the thread that does.

What is deleted, and why it is safe (nothing a reimage controller still waits for):

- tokens spent more than ``spent_grace_s`` ago: a replay of one is still refused (the token is
  then unknown); within the grace it is refused by name as a replay;
- unspent tokens older than their lifetime: ``verify_token`` refuses them on their time alone,
  so an armed attempt's unexpired token is never touched;
- boot events older than ``events_s`` (``--retention``), but never one recorded after the oldest
  reimage attempt still armed (a controller follows the feed from its power action on);
- unknown machines not seen for ``events_s``, and counted noise (unknown MACs, refused reports per
  address and hour) last seen before then.

``cutoffs`` is pure; ``prune_state`` applies them in short transactions (``batch`` rows each) so
a first prune of a large database never holds the write lock for long; ``Pruner`` runs it
every ``every_s`` seconds on a daemon thread of ``golden serve``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.boot.token import DEFAULT_TTL_S
from toolkit.core.errors import GoldenError
from toolkit.state.db import Repo, StateDB

log = logging.getLogger("golden.serve")

DEFAULT_RETENTION_S = 7 * 86400.0
DEFAULT_PRUNE_EVERY_S = 300.0


@dataclass(frozen=True)
class RetentionPolicy:
    """How long boot events and tokens are kept, and how often and how much is pruned at a time."""
    events_s: float = DEFAULT_RETENTION_S
    token_ttl_s: float = DEFAULT_TTL_S
    spent_grace_s: float = 600.0
    every_s: float = DEFAULT_PRUNE_EVERY_S
    batch: int = 5000


@dataclass(frozen=True)
class Cutoffs:
    """The times before which each kind of row goes."""
    spent_before: float
    issued_before: float
    events_before: float


@dataclass(frozen=True)
class Pruned:
    """How many rows of each kind a prune removed."""
    spent_tokens: int = 0
    expired_tokens: int = 0
    events: int = 0
    unknown_machines: int = 0
    noise: int = 0

    @property
    def total(self) -> int:
        """Rows removed in all."""
        return self.spent_tokens + self.expired_tokens + self.events + self.unknown_machines + self.noise


def cutoffs(policy: RetentionPolicy, now: float, oldest_armed: float | None) -> Cutoffs:
    """Delete-before times for ``now``; an attempt armed at ``oldest_armed`` keeps every event since."""
    events_before = now - policy.events_s
    if oldest_armed is not None:
        events_before = min(events_before, oldest_armed)
    return Cutoffs(now - policy.spent_grace_s, now - policy.token_ttl_s, events_before)


def _until_done(db: StateDB, step: Callable[[Repo], int], batch: int) -> int:
    total = 0
    while True:
        with db.write() as repo:
            n = step(repo)
        total += n
        if n < batch:
            return total


def prune_state(db: StateDB, policy: RetentionPolicy, now: float | None = None) -> Pruned:
    """Delete what the policy lets go of at ``now``; a GoldenError when the database cannot be written."""
    at = time.time() if now is None else now
    with db.read() as repo:
        c = cutoffs(policy, at, repo.oldest_active_attempt(at))
    b = policy.batch
    return Pruned(
        spent_tokens=_until_done(db, lambda r: r.prune_spent_tokens(c.spent_before, b), b),
        expired_tokens=_until_done(db, lambda r: r.prune_expired_tokens(c.issued_before, b), b),
        events=_until_done(db, lambda r: r.prune_events(c.events_before, b), b),
        unknown_machines=_until_done(db, lambda r: r.prune_unknown_machines(at - policy.events_s, b), b),
        noise=_until_done(db, lambda r: r.prune_noise(at - policy.events_s, b), b),
    )


class Pruner:
    """``prune_state`` every ``policy.every_s`` seconds on a daemon thread; ``on_pruned`` gets each result."""

    def __init__(self, db: StateDB, policy: RetentionPolicy, on_pruned: Callable[[Pruned], None]) -> None:
        self.db = db
        self.policy = policy
        self._on_pruned = on_pruned
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="golden-serve-prune", daemon=True)

    def start(self) -> None:
        """Start pruning in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the background pruning."""
        self._stop.set()

    def _run(self) -> None:
        # first pass soon after start: a server restarted on an old database shrinks it at once
        delay = min(10.0, self.policy.every_s)
        while not self._stop.wait(delay):
            delay = self.policy.every_s
            try:
                result = prune_state(self.db, self.policy)
            except GoldenError as exc:  # full, read-only or locked: try again next time
                log.warning("golden serve: pruning the state database failed: %s", exc.message)
                continue
            self._on_pruned(result)
            if result.total:
                log.info("golden serve: pruned %d spent and %d expired tokens, %d boot events, %d unknown machines",
                         result.spent_tokens, result.expired_tokens, result.events, result.unknown_machines)
