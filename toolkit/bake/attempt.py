"""One bake attempt, whichever builder makes the root: its run record, its staging folder, where it
stands, and the rollback when it does not finish.

``bake_with`` is the engine: it opens an ``Attempt``, lets the builder produce a root and its
logs, hands them to ``toolkit.bake.collect`` and returns the ``BakeResult``. Any failure or
Ctrl-C rolls the staging folder back (mounts first, with signals held so a second Ctrl-C cannot
cut it short) and the run record says how the attempt ended.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from toolkit.bake import cleanup
from toolkit.bake.collect import Outputs, collect
from toolkit.bake.plan import BakePlan
from toolkit.core.config import Settings
from toolkit.core.progress import Progress
from toolkit.runs.ids import new_run_id
from toolkit.runs.record import RunRecord
from toolkit.store.artifacts import Build, Store
from toolkit.trust import secureboot

log = logging.getLogger("golden.bake")


@dataclass(frozen=True)
class BakeResult:
    """What a bake gave: the stored build, whether it was already there, and how long it took."""

    build: Build
    cache_hit: bool
    seconds: float
    run_id: str | None = None
    run_dir: Path | None = None
    dib_seconds: float | None = None  # of ``seconds``, how long disk-image-create itself ran
    pre_role_root: str | None = None  # key of the cached pre-role root the bake started from
    packer_seconds: float | None = None  # builder: packer: of ``seconds``, how long packer build ran


class Attempt:
    """A bake under way: ``record`` and ``staged`` exist from the start; leave it by ``with``."""

    def __init__(self, settings: Settings, store: Store, image: str, progress: Progress | None) -> None:
        self.run_id = new_run_id("bake", image)
        self.record = RunRecord.create(settings.runs_dir, self.run_id)
        self.staged = store.stage(image, self.run_id)
        self.store, self.progress = store, progress
        self.phase = "starting"
        self.rc: int | None = None  # what the record says, when a builder knows the failed step's code
        self.on_failure: list[Callable[[], None]] = []  # run with signals held, before the rollback
        self.cleanup = ExitStack()  # run last, however the attempt ended
        self._succeeded = False

    def set_phase(self, phase: str) -> None:
        """Say where the attempt stands (the progress line, and an interrupt's message)."""
        self.phase = phase
        if self.progress:
            self.progress.phase(phase)

    def succeeded(self) -> None:
        """Mark the attempt a success: leaving the ``with`` keeps what it made."""
        self._succeeded, self.rc = True, 0

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        status, error = "failed", None
        if kind is None and self._succeeded:
            status = "succeeded"
        elif isinstance(exc, KeyboardInterrupt):
            status, error = "interrupted", f"interrupted during {self.phase}"
        elif exc is not None:
            error = getattr(exc, "message", None) or repr(exc)
        try:
            if status != "succeeded":
                error = self._rollback(error)
        finally:
            try:
                self.cleanup.close()
            finally:
                self.record.finish(status, self.rc, error)

    def _rollback(self, error: str | None) -> str | None:
        """Undo what did not finish: the builder's hooks, mounts and loop devices, then the folder."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for hook in self.on_failure:
                hook()
            left = cleanup.release(self.staged)
            if left:
                log.error("bake left mounts behind: %s", ", ".join(left))
                return f"{error}; {len(left)} mount(s) could not be removed: {', '.join(left)}"
            self.store.discard(self.staged)
            return error
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class RootBuilder(Protocol):
    """What a builder (DIB, Packer; next: disk images, UKIs) does: make a root and its logs, nothing more."""

    def produce(self, attempt: Attempt) -> Outputs:
        """Make the root's artifacts in ``attempt.staged`` and say what the manifest needs of them."""

    def explain(self, exc: Exception, attempt: Attempt) -> Exception:
        """The error to show for a command or file-system failure during production or collection."""


def bake_with(builder: RootBuilder, settings: Settings, store: Store, plan: BakePlan, progress: Progress | None,
              started: float) -> BakeResult:
    """Run one attempt of ``plan`` with ``builder`` and commit what it produced."""
    signer = secureboot.db_key(settings)  # a bad key configuration fails before the build, not after
    with Attempt(settings, store, plan.image, progress) as attempt:
        try:
            outputs = builder.produce(attempt)
            build = collect(store, plan, attempt.staged, attempt.record, outputs, started, signer)
        except Exception as exc:
            wrapped = builder.explain(exc, attempt)
            if wrapped is exc:
                raise
            raise wrapped from None
        attempt.succeeded()
        return BakeResult(build=build, cache_hit=False, seconds=time.monotonic() - started, run_id=attempt.run_id,
                          run_dir=attempt.record.path, **outputs.timings)
