"""Host leases with two controllers on one state database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time

import pytest

from toolkit.rollout.journal import Phase, Step
from toolkit.rollout.leases import LeasedJournal, LeaseError, LeaseKeeper, LeaseLostError, release_leases, take_leases


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def two(state_backend):
    """Two controllers: each its own connection(s) to the same database."""
    return state_backend(), state_backend()


def _leases(db, hosts):
    with db.read() as repo:
        return {lease.host: (lease.run_id, lease.holder) for lease in repo.get_leases(hosts)}


def test_overlapping_run_is_refused_naming_the_other_run(two):
    a, b = two
    clock = Clock()
    take_leases(a, ["n0", "n1"], "run-a", "ctl-a", ttl_s=60, clock=clock)
    with pytest.raises(LeaseError, match=r"host\(s\) n1 are leased by reimage run run-a \(controller ctl-a") as err:
        take_leases(b, ["n1", "n2"], "run-b", "ctl-b", ttl_s=60, clock=clock)
    assert err.value.exit_code == 1 and "golden runs show run-a" in (err.value.hint or "")
    assert _leases(b, ["n0", "n1", "n2"]) == {"n0": ("run-a", "ctl-a"), "n1": ("run-a", "ctl-a")}  # all or nothing
    take_leases(b, ["n2", "n3"], "run-b", "ctl-b", ttl_s=60, clock=clock)  # disjoint hosts: fine


def test_a_dead_controllers_leases_lapse_and_a_resume_takes_them(two):
    a, b = two
    clock = Clock()
    take_leases(a, ["n0", "n1"], "run-a", "ctl-a", ttl_s=60, clock=clock)
    with pytest.raises(LeaseError, match="run run-a is still being driven by controller ctl-a"):
        take_leases(b, ["n0", "n1"], "run-a", "ctl-b", ttl_s=60, clock=clock)  # a resume while A lives
    clock.now += 61  # A died: nobody renewed
    take_leases(b, ["n0", "n1"], "run-a", "ctl-b", ttl_s=60, clock=clock)
    assert _leases(a, ["n0", "n1"]) == {"n0": ("run-a", "ctl-b"), "n1": ("run-a", "ctl-b")}


def test_release_frees_the_hosts(two):
    a, b = two
    take_leases(a, ["n0"], "run-a", "ctl-a")
    release_leases(a, "ctl-a")
    assert _leases(b, ["n0"]) == {}
    take_leases(b, ["n0"], "run-b", "ctl-b")
    assert _leases(a, ["n0"]) == {"n0": ("run-b", "ctl-b")}


def test_keeper_renews_while_alive_and_releases_at_the_end(two):
    a, b = two
    take_leases(a, ["n0"], "run-a", "ctl-a", ttl_s=0.6)
    with LeaseKeeper(a, "ctl-a", ttl_s=0.6):
        time.sleep(1.5)  # more than two lease lifetimes: only renewals keep it
        with pytest.raises(LeaseError, match="run-a"):
            take_leases(b, ["n0"], "run-b", "ctl-b", ttl_s=0.6)
    assert _leases(b, ["n0"]) == {}
    take_leases(b, ["n0"], "run-b", "ctl-b")


def test_racing_controllers_never_both_win(two):
    a, b = two
    wins: list[str] = []
    start = threading.Barrier(2)

    def race(db, name: str) -> None:
        start.wait(10)
        try:
            take_leases(db, ["n0", "n1", "n2"], f"run-{name}", f"ctl-{name}")
            wins.append(name)
        except LeaseError:
            pass

    threads = [threading.Thread(target=race, args=(db, n)) for db, n in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert set(_leases(a, ["n0", "n1", "n2"]).values()) == {(f"run-{wins[0]}", f"ctl-{wins[0]}")}


def test_a_controller_whose_lease_was_taken_over_stops_before_acting(two):
    a, b = two
    clock = Clock()
    take_leases(a, ["n0", "n1"], "run-a", "ctl-a", ttl_s=60, clock=clock)
    journal_a = LeasedJournal(a, "ctl-a")
    journal_a.create_run("run-a", "alice", "all", "web", "b2", {})
    journal_a.record_many("run-a", [("n0", 0, 1, Step.POWER, Phase.INTENT, "")])  # held: journaled
    clock.now += 61  # A stalled past its lease; B resumes the run and takes the hosts
    take_leases(b, ["n0", "n1"], "run-a", "ctl-b", ttl_s=60, clock=clock)
    with pytest.raises(LeaseLostError, match=r"lost its lease on n1 to controller ctl-b \(run run-a\)"):
        journal_a.record_many("run-a", [("n1", 0, 1, Step.POWER, Phase.INTENT, "")])
    assert [(s.host, s.phase) for s in journal_a.steps("run-a")] == [("n0", "intent")]  # nothing after the loss
    LeasedJournal(b, "ctl-b").record_many("run-a", [("n1", 0, 1, Step.POWER, Phase.INTENT, "")])


def test_a_dead_local_controllers_lease_does_not_block_a_resume() -> None:
    import os
    import socket
    import subprocess

    from toolkit.rollout.leases import holder_is_dead

    gone = subprocess.Popen(["true"])
    gone.wait()
    here = socket.gethostname()
    assert holder_is_dead(f"{here}:{gone.pid}:abcd1234")
    assert not holder_is_dead(f"{here}:{os.getpid()}:abcd1234")  # alive: wait for its lease to lapse
    assert not holder_is_dead(f"elsewhere:{gone.pid}:abcd1234")  # another host: only time frees it
    assert not holder_is_dead("garbage")
