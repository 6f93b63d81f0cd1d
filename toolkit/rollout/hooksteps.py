"""The executor's steps that run the operators' playbooks: drain, verify, undrain (golden.yaml rollout.hooks).

A mixin of ``Executor`` (``execute.py``): each step takes the batch's tasks and returns those that
may go on, journaling an intent before its playbooks run and the outcome after, like every step.
A drain that fails makes its task fatal (the host is never power-cycled, never rolled back); a
verify that fails is an ordinary failure (retry, then rollback, still out of rotation); an undrain
that fails is fatal too (the build is good; only its return failed). ``drained`` remembers which
hosts this run holds out of rotation, so a retry or a rollback never drains twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from toolkit.core.playbook import cancel_all
from toolkit.rollout.hookrun import HookCall, HookRunner
from toolkit.rollout.journal import Phase, Step
from toolkit.rollout.plan import Plan

if TYPE_CHECKING:
    from toolkit.rollout.execute import ExecutorConfig, _Task


class HookSteps:
    """Drain, verify and undrain steps over a batch of tasks (mixed into ``Executor``)."""

    plan: Plan
    config: ExecutorConfig
    hooks: HookRunner | None
    drained: dict[str, float]
    _mark: Callable[..., float]
    _emit: Callable[..., Any]

    def _hook_call(self, t: _Task, kind: str) -> HookCall:
        return HookCall(t.host, kind, t.attempt, t.target, self.plan.moves.get(t.host, (None, ""))[0])

    def _run_hooks(self, tasks: list[_Task], step: Step) -> tuple[list[_Task], list[_Task]]:
        """Run each task's playbooks of this kind (tasks in parallel, a host's playbooks in order)."""
        assert self.hooks is not None
        runner = self.hooks
        self._mark(tasks, step, Phase.INTENT,
                   lambda t: ",".join(str(b) for _, b in runner.plan.playbooks(t.host, step.value)))
        pool = ThreadPoolExecutor(max_workers=min(8, len(tasks)))
        try:
            whys = list(pool.map(lambda t: runner.run(self._hook_call(t, step.value)), tasks))
        except BaseException:  # Ctrl-C: the playbooks run in sessions of their own; stop them, do not wait them out
            cancel_all()
            raise
        finally:
            pool.shutdown(wait=True)  # after a cancel each run ends within a second
        ok, bad = [], []
        for t, why in zip(tasks, whys, strict=True):
            if why:
                t.error = why
                bad.append(t)
            else:
                ok.append(t)
        self._mark(ok, step, Phase.DONE)
        self._mark(bad, step, Phase.FAILED, lambda t: t.error)
        return ok, bad

    def _hooked(self, tasks: list[_Task], kind: str) -> tuple[list[_Task], list[_Task]]:
        """(tasks with playbooks of this kind, the others)."""
        has = [t for t in tasks if self.hooks is not None and self.hooks.has(t.host, kind)]
        return has, [t for t in tasks if t not in has]

    def _step_drain(self, tasks: list[_Task]) -> list[_Task]:
        todo, rest = self._hooked([t for t in tasks if t.host not in self.drained], "drain")
        rest += [t for t in tasks if t.host in self.drained]  # still out from an earlier attempt
        if not todo:
            return rest
        ok, bad = self._run_hooks(todo, Step.DRAIN)
        now = time.time()
        for t in ok:
            self.drained[t.host] = now
        for t in bad:
            t.fatal = True
            t.error = f"drain failed, so it was not power-cycled: {t.error}"
        self._settle_after_drain(ok)
        return rest + ok

    def _settle_after_drain(self, tasks: list[_Task]) -> None:
        """After a drain, before any BMC call: give the load balancer's connections time to finish."""
        assert self.hooks is not None
        until = max((self.drained[t.host] + self.hooks.plan.settle_s(t.host) for t in tasks), default=0.0)
        while time.time() < until:
            self._emit(f"settling after drain ({until - time.time():.0f} s left)")
            time.sleep(min(self.config.tick, max(until - time.time(), 0.0)))

    def _step_verify(self, tasks: list[_Task]) -> list[_Task]:
        todo, rest = self._hooked(tasks, "verify")
        if not todo:
            return tasks
        ok, bad = self._run_hooks(todo, Step.VERIFY)
        for t in bad:
            t.error = f"verify failed: {t.error}"
        return rest + ok

    def _step_undrain(self, tasks: list[_Task]) -> list[_Task]:
        todo, rest = self._hooked(tasks, "undrain")
        if not todo:
            return tasks
        ok, bad = self._run_hooks(todo, Step.UNDRAIN)
        for t in ok:
            self.drained.pop(t.host, None)
        for t in bad:
            t.fatal = True  # the build is good and verified; only its return failed: no rollback
            t.error = f"undrain failed, so it stays out of rotation: {t.error}"
        return rest + ok
