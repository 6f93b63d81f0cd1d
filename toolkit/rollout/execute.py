"""Execute a reimage plan wave by wave, writing every transition to the journal before acting.

Per host and attempt: run the operators' drain playbooks (golden.yaml ``rollout.hooks``; a host
whose drain fails is never power-cycled), record the desired build, set one-time PXE, arm the attempt and power
cycle (or on), wait for the agent's report of the expected build carrying this attempt's token
(verified by the boot server; see ``toolkit.boot.evidence``), then gate on the image's
boot-stage health checks as reported, then run the verify playbooks (the service answers from
outside) and only then the undrain playbooks. A host whose verify fails stays out of rotation
through its retries and its rollback, and is returned only when a verify passes; otherwise it is
left out of rotation (``drained``), holding its group's budget. A report counts only once the attempt's contest window
after the power action has passed with no second boot-script fetch; a contested attempt fails.
A host that fails every attempt is rolled back to its previous build and counted against the
failure budget. A canary wave must fully pass; once the budget is exceeded no new wave starts.

Group budgets (``max_unavailable`` per hook pattern) are held in the state database
(``rotation.py``): a wave goes out in as many batches as the budgets allow, waiting while another
live run holds them, and the run stops when only failures hold them.

BMC calls run in the bounded BmcPool; waiting for reports follows the boot-events feed with
one query per tick for the whole wave, never a poll per host. From just before the power action
until the report wait ends, each host's serial console is captured over SOL into the run's folder
(``consolecap``; a capture that cannot run is a note there, never a failure).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from toolkit.bmc.base import BmcClient, BootDevice, PowerAction
from toolkit.bmc.pool import BmcPool
from toolkit.fleet.fleet import Fleet
from toolkit.inventory.hosts import Host
from toolkit.rollout.consolecap import ConsoleCapture
from toolkit.rollout.events import (
    event_attempt,
    event_detail,
    failed_checks,
    fetched_from,
    refused_errno,
    reported_checks,
)
from toolkit.rollout.hookrun import HookRunner
from toolkit.rollout.hooksteps import HookSteps
from toolkit.rollout.journal import ATTEMPT_STEPS, Journal, Phase, RunStatus, Step, StepRow
from toolkit.rollout.plan import Plan
from toolkit.rollout.rotation import Rotation
from toolkit.state.boots import BOOT_REFUSED

log = logging.getLogger("golden.rollout")

TICK = 0.5


class HostResult(StrEnum):
    """How a host ended its run."""

    DONE = "done"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"  # failed and could not be rolled back (or had nothing to roll back to)
    NOT_STARTED = "not-started"


@dataclass
class WaveProgress:
    """What the progress line shows: the wave, each host state's count, failures against the budget."""

    wave: int
    waves: int
    states: dict[str, int]
    failures: int
    budget: int
    message: str = ""


@dataclass
class RunOutcome:
    """How a run ended: its status, each host's result and a one-line summary."""

    run_id: str
    status: RunStatus
    results: dict[str, str]
    failures: int
    budget: int
    waves_done: int
    waves: int
    summary: str
    seconds: float


def attempt_id(run_id: str, host: str, attempt: int) -> str:
    """The id a token carries for one (run, host, attempt): derived, so a resumed run knows it again."""
    return hashlib.sha256(f"{run_id}|{host}|{attempt}".encode()).hexdigest()[:16]


@dataclass
class _Task:
    host: str
    wave: int
    attempt: int
    target: str
    rollback: bool = False
    image: str = ""
    next_step: Step = Step.DRAIN
    power_at: float | None = None  # journal time of the power intent: reports must come after it
    error: str = ""
    report_detail: str | None = None  # the accepted report's event detail (health check results)
    fatal: bool = False  # a drain or undrain failed: no retry, no rollback (the host was never cycled / is fine)
    drained_at: float | None = None  # when this run's drain of the host succeeded (resume reads it back)


class BudgetExhausted(Exception):
    """No host of the wave can go out of rotation, and no live run will free a place."""


@dataclass
class ExecutorConfig:
    """The executor's timings and gates (from the plan's policy and the image's boot checks)."""

    boot_timeout_s: float = 900.0
    retries: int = 1
    required_checks: tuple[str, ...] = ()
    tick: float = TICK
    contest_window_s: float = 15.0  # after the power action, before a report counts (see boot.evidence)
    # the event that ends a host's wait: an agent's "report", or for golden retire the cleaning image's "clean"
    report_kind: str = "report"


def _power_cycle_or_on(client: BmcClient) -> str:
    """Fire and return: a cycle on a running machine, power on for one that is off."""
    if client.get_power() == "off":
        client.set_power(PowerAction.ON)
        return "on"
    client.set_power(PowerAction.CYCLE)
    return "cycle"


@dataclass
class Executor(HookSteps):
    """Runs one plan: waves, batches within the group budgets, attempts, retries and rollbacks."""

    run_id: str
    plan: Plan
    hosts: dict[str, Host]
    fleet: Fleet
    journal: Journal
    pool: BmcPool
    config: ExecutorConfig
    on_progress: Callable[[WaveProgress], None] = lambda p: None
    hooks: HookRunner | None = None
    rotation: Rotation | None = None
    consoles: ConsoleCapture | None = None
    results: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    failures: int = 0
    drained: dict[str, float] = field(default_factory=dict)  # hosts this run holds drained -> since
    _states: dict[str, str] = field(default_factory=dict)
    _wave_no: int = 0

    @property
    def current_wave(self) -> int:
        """The wave being run (0-based)."""
        return self._wave_no

    # ---- journal helpers ----
    def _mark(self, tasks: Sequence[_Task], step: Step, phase: Phase,
              detail: Callable[[_Task], str] | str = "") -> float:
        rows = [(t.host, t.wave, t.attempt, step, phase, detail(t) if callable(detail) else detail) for t in tasks]
        for t in tasks:
            self._states[t.host] = f"{'rollback:' if t.rollback else ''}{step.value}"
        at = self.journal.record_many(self.run_id, rows)
        self._emit()
        return at

    def _emit(self, message: str = "") -> None:
        counts: dict[str, int] = {}
        for s in self._states.values():
            counts[s] = counts.get(s, 0) + 1
        self.on_progress(WaveProgress(self._wave_no, len(self.plan.waves), counts, self.failures,
                                  self.plan.failure_budget, message))

    # ---- steps, each over a batch of tasks; each returns the tasks that succeeded ----
    def _step_desired(self, tasks: list[_Task]) -> list[_Task]:
        self._mark(tasks, Step.DESIRED, Phase.INTENT, lambda t: t.target)
        for t in tasks:
            self.fleet.set_desired(t.host, t.image or self.plan.image, t.target)
        self._mark(tasks, Step.DESIRED, Phase.DONE, lambda t: t.target)
        return tasks

    def _bmc_step(self, tasks: list[_Task], step: Step, op: Callable[[BmcClient], str]) -> list[_Task]:
        if not tasks:
            return []
        intent_at = self._mark(tasks, step, Phase.INTENT)
        outcomes = self.pool.map([self.hosts[t.host].endpoint for t in tasks], op)
        ok, bad = [], []
        for t, o in zip(tasks, outcomes, strict=True):
            if o.ok:
                ok.append(t)
                if step == Step.POWER:
                    t.power_at = intent_at
            else:
                t.error = o.message or o.error or "BMC error"
                bad.append(t)
        self._mark(ok, step, Phase.DONE, lambda t: "")
        self._mark(bad, step, Phase.FAILED, lambda t: t.error)
        return ok

    def _step_bootdev(self, tasks: list[_Task]) -> list[_Task]:
        if self.hooks is not None:  # a resumed task killed in its settle wait finishes it first
            self._settle_after_drain([t for t in tasks if t.host in self.drained])
        def op(client: BmcClient) -> str:
            host = self.hosts[client.host]
            client.set_bootdev(BootDevice.PXE, persistent=False, uefi=host.uefi)
            return "pxe"

        return self._bmc_step(tasks, Step.BOOTDEV, op)

    def _step_power(self, tasks: list[_Task]) -> list[_Task]:
        if not tasks:
            return []
        # Armed before the BMC is touched: every boot script fetched from now on counts for the attempt.
        self.fleet.arm_attempts([(t.host, self._attempt_id(t), t.target) for t in tasks],
                                expires_in=self.config.boot_timeout_s + self.config.contest_window_s + 60)
        self._capture(tasks, start=True)
        ok = self._bmc_step(tasks, Step.POWER, _power_cycle_or_on)
        self._capture([t for t in tasks if t not in ok], start=False)
        return ok

    def _capture(self, tasks: list[_Task], *, start: bool) -> None:
        """Start (or stop) capturing the tasks' consoles for their attempts."""
        for t in tasks if self.consoles is not None else ():
            if start:
                self.consoles.start(t.host, t.attempt, self.hosts[t.host].endpoint)  # type: ignore[union-attr]
            else:
                self.consoles.stop(t.host)  # type: ignore[union-attr]
        if start and self.consoles is not None and tasks:
            late = self.consoles.wait_started([(t.host, t.attempt) for t in tasks])
            if late:
                log.info("console capture not open yet on %d host(s) (%s): powering on anyway", len(late),
                         ", ".join(late[:5]))

    def _attempt_id(self, t: _Task) -> str:
        return attempt_id(self.run_id, t.host, t.attempt)

    def _step_report(self, tasks: list[_Task]) -> list[_Task]:
        """Follow the boot-events feed until each task's attempt reports genuinely, is contested, or times out."""
        if not tasks:
            return []
        self._mark(tasks, Step.REPORT, Phase.INTENT, lambda t: t.target)
        waiting = {t.host: t for t in tasks}
        reported: dict[str, str] = {}  # host -> report detail, not yet past the contest window
        failed: dict[str, str] = {}  # host -> why its attempt cannot count any more (contested)
        got: dict[str, str] = {}
        cursor = self._events_cursor_before(min(t.power_at or time.time() for t in tasks))
        while waiting:
            with self.fleet.db.read() as repo:
                events = repo.events_after(cursor, kinds=(self.config.report_kind, "contested", BOOT_REFUSED),
                                           limit=5000)
            for ev in events:
                cursor = ev.id
                self._take_event(ev.kind, waiting.get(ev.host or ""), ev.build_id, ev.at, ev.detail, reported, failed)
            self._settle(waiting, reported, failed, got, time.time())
            if waiting and len(events) < 5000:
                time.sleep(self.config.tick)
        self.fleet.disarm_attempts([(t.host, self._attempt_id(t)) for t in tasks])
        self._capture(tasks, start=False)
        ok = [t for t in tasks if t.host in got]
        bad = [t for t in tasks if t.host not in got]
        for t in ok:
            t.report_detail = got[t.host]
        self._mark(ok, Step.REPORT, Phase.DONE, lambda t: got[t.host])
        self._mark(bad, Step.REPORT, Phase.FAILED, lambda t: t.error)
        return ok

    def _take_event(self, kind: str, t: _Task | None, build: str | None, at: float, detail: str,
                    reported: dict[str, str], failed: dict[str, str]) -> None:
        """Note a report or a contest that belongs to the task's attempt; ignore everything else."""
        if t is None or t.power_at is None or at < t.power_at or t.host in failed:
            return
        if event_attempt(detail) != self._attempt_id(t):
            return  # a report with a token from before this attempt's power action, or another attempt's
        if kind == "contested":
            failed[t.host] = ("boot contested: the boot script of this attempt was fetched more than once "
                              f"({fetched_from(detail)}); no report of it counts")
            reported.pop(t.host, None)
        elif kind == BOOT_REFUSED:  # firmware evidence only ever fails a host
            failed[t.host] = (f"boot refused: the firmware would not start the signed image of build {build} "
                              f"(Secure Boot; iPXE error {refused_errno(detail)}); check the db key it was signed "
                              "with and the image in the store")
            reported.pop(t.host, None)
        elif kind == "clean" and event_detail(detail).get("result") != "clean":
            failed[t.host] = f"clean failed: {event_detail(detail).get('summary') or 'no disk reported'}"
            reported.pop(t.host, None)
        elif kind == self.config.report_kind and build == t.target:
            reported.setdefault(t.host, detail)

    def _settle(self, waiting: dict[str, _Task], reported: dict[str, str], failed: dict[str, str],
                got: dict[str, str], now: float) -> None:
        for name, t in list(waiting.items()):
            power_at = t.power_at or now
            if name in failed:
                t.error = failed[name]
                del waiting[name]
            elif name in reported and now >= power_at + self.config.contest_window_s:
                got[name] = reported.pop(name)
                del waiting[name]
            elif now > power_at + self.config.boot_timeout_s:
                t.error = (f"no genuine report of build {t.target} within {self.config.boot_timeout_s:g} s "
                           "(a report counts only with the token of this attempt's boot script)")
                del waiting[name]

    def _events_cursor_before(self, at: float) -> int:
        with self.fleet.db.read() as repo:
            return repo.last_event_before(at)

    def _step_checks(self, tasks: list[_Task]) -> list[_Task]:
        gated = [t for t in tasks if not t.rollback]
        if not gated:
            return tasks
        self._mark(gated, Step.CHECKS, Phase.INTENT, ",".join(self.config.required_checks))
        ok, bad = [t for t in tasks if t.rollback], []
        for t in gated:
            detail = self._last_report_detail(t)
            failed = failed_checks(self.config.required_checks, reported_checks(detail))
            if failed:
                t.error = "health checks failed: " + "; ".join(failed)
                bad.append(t)
            else:
                ok.append(t)
        self._mark([t for t in ok if not t.rollback], Step.CHECKS, Phase.DONE)
        self._mark(bad, Step.CHECKS, Phase.FAILED, lambda t: t.error)
        return ok

    def _last_report_detail(self, t: _Task) -> str:
        if t.report_detail is not None:
            return t.report_detail
        # A resumed task whose report arrived before the controller died: read it back from the journal.
        rows = self.journal.steps(self.run_id, t.host)
        for r in reversed(rows):
            if r.step == Step.REPORT.value and r.phase == Phase.DONE.value and r.attempt == t.attempt:
                return r.detail
        return ""

    # ---- one attempt for a batch, entering each task at its next step ----
    def _attempt(self, tasks: list[_Task]) -> tuple[list[_Task], list[_Task]]:
        order = list(ATTEMPT_STEPS)
        steps = {
            Step.DRAIN: self._step_drain, Step.DESIRED: self._step_desired, Step.BOOTDEV: self._step_bootdev,
            Step.POWER: self._step_power, Step.REPORT: self._step_report, Step.CHECKS: self._step_checks,
            Step.VERIFY: self._step_verify, Step.UNDRAIN: self._step_undrain,
        }
        alive = list(tasks)
        for step in order:
            entering = [t for t in alive if order.index(t.next_step) <= order.index(step)]
            passing = [t for t in alive if t not in entering]
            survivors = steps[step](entering) if entering else []
            for t in survivors:
                t.next_step = order[min(order.index(step) + 1, len(order) - 1)]
            alive = passing + survivors
        failed = [t for t in tasks if t not in alive]
        return alive, failed

    def run_wave(self, index: int, tasks: list[_Task]) -> None:
        """Move the wave's hosts in as many batches as the group budgets allow."""
        self._wave_no = index
        for t in tasks:
            self._states.setdefault(t.host, "queued")
        queue = list(tasks)
        while queue:
            batch = self._admit(queue)
            self._run_batch(batch)
            queue = [t for t in queue if t not in batch]

    def _admit(self, queue: list[_Task]) -> list[_Task]:
        """The tasks whose hosts may go out of rotation now; waits while a live run holds the budget."""
        if self.rotation is None:
            return queue
        while True:
            names, blocked = self.rotation.admit([t.host for t in queue])
            if names:
                return [t for t in queue if t.host in names]
            stuck = self.rotation.stuck(blocked)
            if len(stuck) == len(blocked):
                raise BudgetExhausted("; ".join(dict.fromkeys(b.describe() for b in stuck)))
            for t in queue:
                self._states[t.host] = "waiting-for-budget"
            self._emit(f"waiting: {blocked[0].describe()}")
            time.sleep(max(self.config.tick, 1.0))

    def _run_batch(self, tasks: list[_Task]) -> None:
        pending = [t for t in tasks if not t.rollback]
        rollbacks = [t for t in tasks if t.rollback]
        while pending:
            done, failed = self._attempt(pending)
            self._finish(done, HostResult.DONE)
            retry = []
            for t in failed:
                if t.fatal:
                    self._finish([t], HostResult.FAILED)
                elif t.attempt <= self.config.retries:
                    retry.append(_Task(t.host, t.wave, t.attempt + 1, t.target))
                else:
                    prev = self.plan.moves[t.host][0]
                    if not self.plan.policy.rollback:
                        self._finish([t], HostResult.FAILED, t.error + "; not rolled back (rollback is off)")
                    elif prev and prev != self.plan.target_build:
                        rollbacks.append(_Task(t.host, t.wave, t.attempt + 1, prev, rollback=True,
                                               image=self.plan.current_images.get(t.host) or self.plan.image,
                                               error=t.error))
                        self.errors[t.host] = t.error
                    else:
                        self._finish([t], HostResult.FAILED, t.error + "; nothing to roll back to")
            pending = retry
        while rollbacks:
            back, broken = self._attempt(rollbacks)
            self._finish(back, HostResult.ROLLED_BACK)
            for t in broken:
                first = self.errors.get(t.host)
                self._finish([t], HostResult.FAILED, f"{first}; rollback failed: {t.error}" if first else None)
            rollbacks = []

    def _finish(self, tasks: Sequence[_Task], result: HostResult, detail: str | None = None) -> None:
        if not tasks:
            return
        if result != HostResult.DONE:
            self.failures += len(tasks)
        self._mark(tasks, Step.HOST, Phase.DONE, lambda t: json.dumps(
            {"result": result.value, "error": detail or t.error, "build": t.target}))
        for t in tasks:
            self.results[t.host] = result.value
            self._states[t.host] = result.value
            self.errors.setdefault(t.host, detail or t.error)
            self._rotate(t, result, detail or t.error)
        self._emit()

    def _settle_finished(self, finished: dict[str, str]) -> None:
        """On resume: a host the dead controller had finished gets its budget rows settled now (it may
        have died between the host's end and their update), as ``_rotate`` would have."""
        if self.rotation is None:
            return
        for host, result in finished.items():
            if not self.rotation.tracked(host):
                continue
            rows = self.journal.steps(self.run_id, host)
            end = next((r.detail for r in reversed(rows) if r.step == Step.HOST.value), "{}")
            why = str(json.loads(end or "{}").get("error") or "left out of rotation")
            out = _drained_since(rows) is not None
            if result == HostResult.FAILED.value or out:
                self.rotation.leave(host, why)
            else:
                self.rotation.release(host)

    def _rotate(self, t: _Task, result: HostResult, why: str) -> None:
        """A finished host is back in rotation only when it ended well (its undrain, if any, passed)."""
        if self.rotation is None:
            return
        if result == HostResult.FAILED or t.host in self.drained:
            self.rotation.leave(t.host, why or "left out of rotation")
        else:
            self.rotation.release(t.host)

    def run(self, resume: dict[str, _Task] | None = None, finished: dict[str, str] | None = None) -> RunOutcome:
        """Every wave in order (a resumed run enters each host where its journal left it); the outcome."""
        started = time.monotonic()
        self.results.update(finished or {})
        self.drained.update({t.host: t.drained_at for t in (resume or {}).values() if t.drained_at is not None})
        self._settle_finished(finished or {})
        self.failures = sum(1 for r in self.results.values() if r != HostResult.DONE.value)
        for name in self.plan.hosts:
            self._states[name] = self.results.get(name, "queued")
        stop_reason = ""
        waves_done = 0
        for wave in self.plan.waves:
            tasks = []
            for h in wave.hosts:
                if h in self.results:
                    continue
                tasks.append(resume[h] if resume and h in resume else _Task(h, wave.index, 1, self.plan.target_build))
            if tasks:
                try:
                    self.run_wave(wave.index, tasks)
                except BudgetExhausted as exc:
                    stop_reason = (f"no host can go out of rotation: {exc}; return those hosts "
                                   "(e.g. golden reimage HOST --state drained) and run again")
                    break
            waves_done += 1
            wave_failed = [h for h in wave.hosts if self.results.get(h) != HostResult.DONE.value]
            if wave.canary and wave_failed:
                why = next((self.errors[h] for h in wave_failed if self.errors.get(h)), "")
                stop_reason = (f"canary failed on {', '.join(wave_failed)}{': ' + why if why else ''}; "
                               "no other host was touched")
                break
            if self.failures > self.plan.failure_budget:
                stop_reason = (f"failure budget exceeded ({self.failures} failed, budget "
                               f"{self.plan.failure_budget}); no new wave started")
                break
        for h in self.plan.hosts:
            self.results.setdefault(h, HostResult.NOT_STARTED.value)
        done = sum(1 for r in self.results.values() if r == HostResult.DONE.value)
        if self.plan.hosts and done == 0 and not stop_reason:
            # a budget allows some failures among successes; a run where no host reached the
            # target proved nothing about the build and must not read as a success
            stop_reason = "no host reached the target build"
        ok = not stop_reason and self.failures <= self.plan.failure_budget
        summary = (f"{done}/{len(self.plan.hosts)} host(s) on {self.plan.image}/{self.plan.target_build}, "
                   f"{self.failures} failed (budget {self.plan.failure_budget})")
        if stop_reason:
            summary += f"; {stop_reason}"
        status = RunStatus.SUCCEEDED if ok else RunStatus.FAILED
        self.journal.set_status(self.run_id, status, summary)
        return RunOutcome(self.run_id, status, dict(self.results), self.failures, self.plan.failure_budget,
                          waves_done, len(self.plan.waves), summary, round(time.monotonic() - started, 3))


def resume_state(steps: Sequence[StepRow], target_build: str, moves: dict[str, tuple[str | None, str]],
                 images: dict[str, str | None] | None = None) -> tuple[dict[str, _Task], dict[str, str]]:
    """From the journal, where each host stands: tasks to continue, and hosts already finished.

    A power step whose intent was written but whose outcome was not (the controller died
    around the BMC call) is treated as done: the report wait decides. If the machine never
    boots, that attempt times out and the next attempt cycles it, so no host is cycled twice
    for the same attempt.
    """
    images = images or {}
    by_host: dict[str, list[StepRow]] = {}
    for s in steps:
        by_host.setdefault(s.host, []).append(s)
    tasks: dict[str, _Task] = {}
    finished: dict[str, str] = {}
    order = list(ATTEMPT_STEPS)
    for host, rows in by_host.items():
        end = [r for r in rows if r.step == Step.HOST.value]
        if end:
            finished[host] = json.loads(end[-1].detail).get("result", HostResult.FAILED.value)
            continue
        attempt = max(r.attempt for r in rows)
        cur = [r for r in rows if r.attempt == attempt]
        desired = next((r.detail for r in cur if r.step == Step.DESIRED.value), target_build)
        rollback = desired != target_build
        wave = cur[0].wave
        last = cur[-1]
        step = Step(last.step)
        task = _Task(host, wave, attempt, desired or target_build, rollback=rollback,
                     image=(images.get(host) or "") if rollback else "")
        power = [r for r in cur if r.step == Step.POWER.value and r.phase == Phase.INTENT.value]
        if power:
            task.power_at = power[-1].at
        task.drained_at = _drained_since(rows)
        if step == ATTEMPT_STEPS[-1] and last.phase == Phase.DONE.value:
            # every step of the attempt was done (the undrain too); only the host's end was not written
            finished[host] = (HostResult.ROLLED_BACK if rollback else HostResult.DONE).value
            continue
        if last.phase == Phase.FAILED.value and step in (Step.DRAIN, Step.UNDRAIN):
            task.next_step = step  # a playbook that failed changed nothing we rely on: run it again
        elif last.phase == Phase.FAILED.value:
            # The step failed and the controller died before deciding: start the next attempt.
            task = _Task(host, wave, attempt + 1, target_build if not rollback else task.target, rollback=rollback,
                         image=task.image, drained_at=task.drained_at)
        elif step == Step.POWER and last.phase == Phase.INTENT.value:
            task.next_step = Step.REPORT
        elif last.phase == Phase.DONE.value:
            task.next_step = order[min(order.index(step) + 1, len(order) - 1)] if step in order else Step.DESIRED
        else:
            task.next_step = step  # an intent for a step that is safe to repeat
        tasks[host] = task
    return tasks, finished


def _drained_since(rows: Sequence[StepRow]) -> float | None:
    """When the host's last drain that no undrain followed succeeded (None: it is in rotation)."""
    since: float | None = None
    for r in rows:
        if r.phase == Phase.DONE.value and r.step == Step.DRAIN.value:
            since = r.at
        elif r.phase == Phase.DONE.value and r.step == Step.UNDRAIN.value:
            since = None
    return since
