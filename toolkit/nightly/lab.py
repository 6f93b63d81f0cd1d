"""The nightly's boot test: its own lab (``<home>/nightly-lab``, nodes ``nightly-lab-nNN``, apart from
the ``lab`` a person may have up) with its own ``golden serve``, and a real reimage of the lab nodes
onto the candidate through their virtual BMCs. That reimage is what records the build's lab-boot
gate (toolkit.rollout.service); this module only brings the lab up and down and reads the result.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.core.config import Settings
from toolkit.core.run import PIPE, Process, kill_group, spawn
from toolkit.lab.machines import LabError, console_text, down_lab, lab_dir, up_lab
from toolkit.nightly.report import console_excerpt
from toolkit.rollout.execute import RunOutcome, WaveProgress
from toolkit.rollout.journal import RunStatus
from toolkit.rollout.plan import Amount, Policy
from toolkit.rollout.service import ReimageRequest, execute_plan, plan_request, show_run

NIGHTLY_LAB = "nightly-lab"
SERVE_START_TIMEOUT = 60.0


class LabBootError(LabError):
    """The nightly's lab or its boot server could not be started."""


@dataclass(frozen=True)
class BootTest:
    """A lab boot test's result: passed or not, its reimage run and what it said."""
    passed: bool
    run_id: str
    detail: str
    excerpt: str = ""
    seconds: float = 0.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_env(settings: Settings) -> dict[str, str]:
    env = {"GOLDEN_HOME": str(settings.home), "GOLDEN_PROJECT": str(settings.project),
           "GOLDEN_CACHE": str(settings.cache),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent.parent)}
    if settings.state_url:
        env["GOLDEN_STATE_URL"] = settings.state_url  # the environment, never argv: it may hold a password
    if settings.inventory:
        env["GOLDEN_INVENTORY"] = str(settings.inventory)
    return env


@dataclass
class NightlyLab:
    """The lab a nightly boots its builds in, with its own boot server."""
    settings: Settings
    nodes: int = 1
    memory_mb: int = 2048
    boot_timeout_s: float = 900.0
    _serve: Process[bytes] | None = None
    _inventory: Path | None = None
    log_path: Path | None = None
    _failed: list[str] = field(default_factory=list)

    def _up(self) -> Path:
        if self._inventory is not None:
            return self._inventory
        port = _free_port()
        if lab_dir(self.settings, NIGHTLY_LAB).exists():
            # left by a nightly that was killed (we hold the nightly lock, so it is nobody's now): its
            # machines chain to that nightly's boot server port, so start from scratch
            down_lab(self.settings, NIGHTLY_LAB)
        status = up_lab(self.settings, self.nodes, boot_url=f"http://10.0.2.2:{port}", memory_mb=self.memory_mb,
                        lab=NIGHTLY_LAB)
        assert status.inventory is not None
        log = self.log_path or Path(status.lab_dir) / "serve.log"
        with open(log, "ab") as errf:
            self._serve = spawn([sys.executable, "-m", "toolkit.cli", "--json", "--home", self.settings.home,
                                 "serve", "--listen", f"127.0.0.1:{port}", "-i", status.inventory],
                                stdout=PIPE, stderr=errf, env=_child_env(self.settings))
        self._wait_listening(log)
        self._inventory = Path(status.inventory)
        return self._inventory

    def _wait_listening(self, log: Path) -> None:
        assert self._serve is not None and self._serve.stdout is not None
        deadline = time.monotonic() + SERVE_START_TIMEOUT
        buf = b""
        while not buf.rstrip().endswith(b"}"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._serve.stdout], [], [], max(left, 0))
            chunk = os.read(self._serve.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                self.stop()
                raise LabBootError(f"the nightly's boot server did not start (log: {log})",
                                   hint=tail.strip().splitlines()[-1] if tail.strip() else None)
            buf += chunk
        json.loads(buf)

    def boot_test(self, image: str, build_id: str, say: Callable[[str], None] = lambda s: None) -> BootTest:
        """Reimage every nightly lab node onto ``image``/``build_id``; passed when each one reported it healthy."""
        started = time.monotonic()
        inventory = self._up()
        policy = Policy(canary=0, wave_size=Amount(self.nodes), max_failures=Amount(0),
                        boot_timeout_s=self.boot_timeout_s, retries=0, include_current=True, rollback=False)
        req = ReimageRequest("all", f"{image}@{build_id}", policy, [str(inventory)])
        # The nightly's own lab machines carry no service: golden.yaml's drain/verify hooks are for the
        # fleet (a hook for "all" must not run the fleet's load balancer playbooks against them).
        plan, checks = plan_request(self.settings, req, hooks=False)
        seen: set[str] = set()

        def progress(p: WaveProgress) -> None:
            states = " ".join(f"{k}={v}" for k, v in sorted(p.states.items()))
            if states not in seen:  # a line per change of the node states, for the nightly's log
                seen.add(states)
                say(f"{image}: lab-boot: {states}")

        outcome = execute_plan(self.settings, req, plan, checks, progress, workers=2)
        return self._result(outcome, time.monotonic() - started)

    def _result(self, outcome: RunOutcome, seconds: float) -> BootTest:
        failed = sorted(h for h, r in outcome.results.items() if r != "done")
        passed = outcome.status == RunStatus.SUCCEEDED and not failed
        if passed:
            return BootTest(True, outcome.run_id, f"reimage run {outcome.run_id}: {len(outcome.results)} lab "
                                                  f"node(s) booted it and reported healthy", seconds=seconds)
        _, steps = show_run(self.settings, outcome.run_id)
        why = [f"{s.host} {s.step}: {s.detail}" for s in steps if s.phase == "failed"][-3:]
        excerpt = "\n".join(f"--- {h} serial console ---\n" + console_excerpt(
            console_text(self.settings, h, lines=0, lab=NIGHTLY_LAB)) for h in failed)
        return BootTest(False, outcome.run_id, f"reimage run {outcome.run_id}: {outcome.summary}"
                        + (f" ({'; '.join(why)})" if why else ""), excerpt, seconds)

    def stop(self) -> None:
        """Stop the nightly's boot server."""
        if self._serve is not None:
            kill_group(self._serve)
            self._serve = None
        if lab_dir(self.settings, NIGHTLY_LAB).exists():
            down_lab(self.settings, NIGHTLY_LAB)
        self._inventory = None
