"""Host leases: one controller at a time acts on a host, and a dead controller's hosts free themselves.

A reimage takes a lease on every host of its plan before it touches any BMC (all or nothing, in
one write transaction, so two controllers racing for overlapping hosts cannot both win). While
the run is alive a keeper thread renews the leases; when the run ends they are released. A
controller killed outright stops renewing, its leases lapse after ``ttl_s``, and any controller
may then resume its run (``golden reimage --resume``) and take them over.

Fencing: ``LeasedJournal`` checks, in the same transaction that journals a step's intent, that this
controller still holds the hosts' leases. Every BMC action is journaled as an intent first, so a
controller whose leases lapsed and were taken over (it was paused, or cut off from the database
longer than the lease) stops before it touches a host another controller now drives.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from toolkit.core.errors import GoldenError
from toolkit.rollout.journal import Journal, Phase, Step
from toolkit.state.db import LeaseRow, NewStep, StateDB, StateError

log = logging.getLogger("golden.reimage")

LEASE_TTL_S = 60.0  # a dead controller's hosts are free again after this long


class LeaseError(GoldenError):
    """Another controller holds a lease on a host this run needs."""


class LeaseLostError(LeaseError):
    """This controller's lease on a host lapsed and another controller took it: it must stop acting."""


def new_holder() -> str:
    """This controller's identity: host, pid and a random part (a pid can be reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str) -> bool:
    """True when ``holder`` was a controller on this host whose process is gone (SIGKILL, a crash).

    Only then is its lease released early: a controller on another host may be alive behind a
    network partition, so its leases lapse on time alone.
    """
    host, _, rest = holder.partition(":")
    pid_s = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_s.isdigit():
        return False
    try:
        os.kill(int(pid_s), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def _refusal(mine: str, conflicts: Sequence[LeaseRow], now: float) -> LeaseError:
    other = conflicts[0]
    hosts = ", ".join(c.host for c in conflicts[:5]) + (f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
    left = max(0, int(other.expires_at - now))
    if other.run_id == mine:
        return LeaseError(f"run {mine} is still being driven by controller {other.holder} (hosts {hosts}); "
                          f"its lease lapses in {left}s if that controller is gone",
                          hint=f"wait, then: golden reimage --resume {mine}")
    return LeaseError(f"host(s) {hosts} are leased by reimage run {other.run_id} (controller {other.holder}, "
                      f"lease renews while it runs, else lapses in {left}s)",
                      hint=f"wait for run {other.run_id} to finish (golden runs show {other.run_id}), "
                           "or reimage other hosts")


def take_leases(db: StateDB, hosts: Sequence[str], run_id: str, holder: str, ttl_s: float = LEASE_TTL_S,
                clock: Callable[[], float] = time.time) -> None:
    """Lease every host to ``holder`` for ``run_id``, or none: LeaseError naming the run that holds one."""
    now = clock()
    with db.write() as repo:
        conflicts = [lease for lease in repo.get_leases(hosts)
                     if lease.holder != holder and lease.expires_at > now and not holder_is_dead(lease.holder)]
        if conflicts:
            raise _refusal(run_id, conflicts, now)
        repo.put_leases(hosts, run_id, holder, now, now + ttl_s)


def release_leases(db: StateDB, holder: str) -> None:
    """Drop every lease ``holder`` has."""
    with db.write() as repo:
        repo.release_leases(holder)


@dataclass
class LeaseKeeper:
    """Renews a holder's leases every ``ttl_s / 3`` on a daemon thread until stopped; then releases them."""

    db: StateDB
    holder: str
    ttl_s: float = LEASE_TTL_S
    clock: Callable[[], float] = time.time
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._loop, name="golden-leases", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.ttl_s)
        try:
            release_leases(self.db, self.holder)
        except StateError as err:  # they lapse by themselves; say so rather than hide the run's own outcome
            log.warning("golden reimage: could not release host leases (%s); they lapse in %ds", err, self.ttl_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                with self.db.write() as repo:
                    repo.renew_leases(self.holder, self.clock() + self.ttl_s)
            except StateError as err:
                # Keep trying: a short outage is shorter than the lease; a long one lets the leases lapse.
                log.warning("golden reimage: could not renew host leases: %s", err)


class LeasedJournal(Journal):
    """The journal of a run driven under leases: no step is journaled (so none acted on) without them."""

    def __init__(self, db: StateDB, holder: str) -> None:
        super().__init__(db)
        self.holder = holder

    def record_many(self, run_id: str, rows: list[tuple[str, int, int, Step, Phase, str]]) -> float:
        """Append several steps in one transaction while the leases hold; when."""
        now = time.time()
        if not rows:
            return now
        hosts = sorted({r[0] for r in rows})
        with self.db.write() as repo:
            held = {lease.host: lease for lease in repo.get_leases(hosts)}
            lost = [h for h in hosts if h not in held or held[h].holder != self.holder]
            if lost:
                other = held.get(lost[0])
                by = f"controller {other.holder} (run {other.run_id})" if other else "nobody (released)"
                raise LeaseLostError(f"this controller lost its lease on {', '.join(lost[:5])} to {by}; "
                                     "stopped before acting on them",
                                     hint=f"see: golden runs show {run_id}")
            repo.record_steps(run_id, [NewStep(h, w, a, s.value, p.value, d) for h, w, a, s, p, d in rows], now)
        return now
