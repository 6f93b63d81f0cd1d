"""Executor logic with fake BMCs whose 'machines' report over the real state DB feed."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from toolkit.bmc.base import BootSetting, PowerAction
from toolkit.bmc.pool import BmcPool, RetryPolicy
from toolkit.fleet.fleet import Fleet
from toolkit.inventory.hosts import Host, load_inventory
from toolkit.rollout.execute import Executor, ExecutorConfig, HostResult, resume_state
from toolkit.rollout.journal import Journal, Phase, RunStatus, Step
from toolkit.rollout.plan import Amount, Candidate, Policy, plan_reimage
from toolkit.state.db import StateDB
from toolkit.store.artifacts import Store


class FakeMachine:
    """Boots whatever the fleet says it should, and reports with the checks of that build."""

    def __init__(self, fleet: Fleet, host: Host, checks_pass: dict[str, bool], log: list[tuple[str, str]]):
        self.fleet, self.host, self.checks_pass, self.log = fleet, host, checks_pass, log
        self.power = "off"

    def boot(self) -> None:
        desired = self.fleet.desired_for(self.host)
        assert desired is not None
        build = desired.build_id
        passed = self.checks_pass.get(build, True)
        armed = self.fleet.attempt_of(self.host.name)  # a real node's token carries the armed attempt
        detail = json.dumps({"checks": {"http-ok": {"passed": passed, "detail": "status 200" if passed else "503"}},
                             "attempt": armed.attempt if armed else ""})
        time.sleep(0.05)
        with self.fleet.db.write() as repo:
            repo.add_event("report", time.time(), self.host.mac, self.host.name, build, detail)


BOOTS: list[threading.Thread] = []  # every fake boot started; run() waits for them before the world goes away


class FakeClient:
    def __init__(self, machine: FakeMachine):
        self.m = machine
        self.host = machine.host.name

    def get_power(self) -> str:
        return self.m.power

    def set_power(self, action: PowerAction) -> None:
        self.m.log.append((self.host, action.value))
        self.m.power = "on"
        boot = threading.Thread(target=self.m.boot, daemon=True)
        BOOTS.append(boot)
        boot.start()

    def get_bootdev(self) -> BootSetting:
        return BootSetting("pxe")

    def set_bootdev(self, device, *, persistent=False, uefi=False) -> None:
        self.m.log.append((self.host, f"bootdev-{device.value}"))

    def get_health(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass


@pytest.fixture
def world(tmp_path: Path, state_db: StateDB):
    inv = tmp_path / "inventory.yml"
    hosts = {f"n{i}": {"mac": f"52:54:00:00:00:0{i}", "bmc_address": "127.0.0.1", "bmc_port": 7000 + i,
                       "bmc_user": "admin", "bmc_password": "pw", "image": "web@prod"} for i in range(3)}
    inv.write_text(json.dumps({"all": {"children": {"rack1": {"hosts": hosts}}}}))
    db = state_db
    fleet = Fleet(db, Store(tmp_path / "store"), inv)
    inventory = load_inventory(inv)
    log: list[tuple[str, str]] = []
    checks = {"C": False}
    machines = {h.name: FakeMachine(fleet, h, checks, log) for h in inventory.hosts}
    pool = BmcPool(client_factory=lambda h: FakeClient(machines[h.name]), retry=RetryPolicy(attempts=1))
    return fleet, {h.name: h for h in inventory.hosts}, Journal(db), pool, log


def run(world, target: str, current: str | None, canary: int = 1, retries: int = 0, budget: int = 0,
        rollback: bool = True):
    fleet, hosts, journal, pool, _ = world
    cands = [Candidate(n, "rack1", current) for n in sorted(hosts)]
    plan = plan_reimage("web", target, cands, Policy(canary=canary, wave_size=Amount(2),
                                                     max_failures=Amount(budget), rollback=rollback))
    run_id = f"run-{target}"
    journal.create_run(run_id, "test", "all", "web", target, {})
    ex = Executor(run_id, plan, hosts, fleet, journal, pool,
                  ExecutorConfig(boot_timeout_s=5, retries=retries, required_checks=("http-ok",), tick=0.05,
                                 contest_window_s=0.2))
    try:
        return ex.run(), run_id
    finally:  # a boot the run's last power action started must not write after the test closed the database
        while BOOTS:
            BOOTS.pop().join(10)


def test_all_hosts_reach_target_canary_first(world):
    outcome, _ = run(world, "B", "A")
    assert outcome.status == RunStatus.SUCCEEDED
    assert set(outcome.results.values()) == {HostResult.DONE.value}
    log = world[4]
    assert [a for h, a in log if a == "on"] == ["on"] * 3
    canary = log[0][0]
    assert all(h == canary for h, _ in log[:2])  # the canary's bootdev + power come before anyone else's


def test_failing_canary_rolls_back_and_touches_no_other_host(world):
    outcome, run_id = run(world, "C", "B", retries=1)
    assert outcome.status == RunStatus.FAILED
    canary = next(h for h, r in outcome.results.items() if r == HostResult.ROLLED_BACK.value)
    others = [h for h in outcome.results if h != canary]
    assert all(outcome.results[h] == HostResult.NOT_STARTED.value for h in others)
    assert {h for h, _ in world[4]} == {canary}
    # two attempts on C, then one rollback boot to B: three power actions, each once per attempt
    steps = world[2].steps(run_id, canary)
    powers = [(s.attempt, s.phase) for s in steps if s.step == Step.POWER.value and s.phase == Phase.INTENT.value]
    assert powers == [(1, "intent"), (2, "intent"), (3, "intent")]
    assert world[0].desired_for(world[1][canary]).build_id == "B"
    assert "canary failed" in outcome.summary


def test_without_rollback_a_failed_host_stays_on_the_failed_build(world):
    """The nightly's lab boot test: the failing boot stays on the node (its console is the evidence)."""
    outcome, run_id = run(world, "C", "B", retries=0, rollback=False)
    assert outcome.status == RunStatus.FAILED
    canary = next(h for h, r in outcome.results.items() if r == HostResult.FAILED.value)
    steps = world[2].steps(run_id, canary)
    assert [s.attempt for s in steps if s.step == Step.POWER.value and s.phase == Phase.INTENT.value] == [1]
    assert world[0].desired_for(world[1][canary]).build_id == "C"
    assert any("not rolled back" in s.detail for s in steps if s.step == Step.HOST.value)


def test_resume_after_power_intent_does_not_cycle_again(world):
    journal = world[2]
    journal.create_run("r", "t", "all", "web", "B", {})
    journal.record("r", "n0", 0, 1, Step.DESIRED, Phase.DONE, "B")
    journal.record("r", "n0", 0, 1, Step.POWER, Phase.INTENT)
    journal.record("r", "n1", 1, 1, Step.HOST, Phase.DONE, json.dumps({"result": "done"}))
    tasks, finished = resume_state(journal.steps("r"), "B", {})
    assert finished == {"n1": "done"}
    assert tasks["n0"].next_step == Step.REPORT and tasks["n0"].attempt == 1



def test_a_run_where_every_host_failed_is_not_a_success_within_budget(world):
    outcome, _ = run(world, "C", "B", canary=0, budget=3)
    assert outcome.failures == 3 and outcome.budget == 3
    assert outcome.status == RunStatus.FAILED
    assert "no host reached the target build" in outcome.summary
