"""Run a host's hooks of one kind (drain, verify, undrain) with the run's inputs, and say how it went.

Each playbook runs once per (host, attempt, kind, hook) with the extra vars golden promises
(``golden_host``, ``golden_build``, ``golden_previous_build``, ``golden_run_id``,
``golden_attempt``), limited to the host, against every inventory source golden read; its record
is ``<home>/runs/<run-id>/hooks/<host>.<attempt>.<kind>.<hook>/`` and its output
``….log`` beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.playbook import PlaybookRun, run_playbook
from toolkit.rollout.hooks import HookPlan


@dataclass(frozen=True)
class HookCall:
    """One host's hooks of one kind, for one attempt."""

    host: str
    kind: str  # drain | verify | undrain
    attempt: int
    build: str  # the build the host is being moved to (the previous one, for a rollback)
    previous: str | None  # the build it ran before this run


@dataclass
class HookRunner:
    """Runs the hooks of one reimage run, each playbook with the run's inputs and a record of its own."""

    plan: HookPlan
    project: Path
    inventory: Sequence[str]
    records: Path  # <home>/runs/<run-id>/hooks
    run_id: str
    vault_ids: Sequence[str] = ()  # what golden was given (-\-vault-id, --vault-password-file): the same for the hooks
    vault_password_files: Sequence[str] = ()

    def has(self, host: str, kind: str) -> bool:
        """Whether ``host`` has playbooks of this kind."""
        return bool(self.plan.playbooks(host, kind))

    def run(self, call: HookCall) -> str:
        """Run the playbooks in order, stopping at the first failure: '' when all passed, else why."""
        for hook, written in self.plan.playbooks(call.host, call.kind):
            book = written if written.is_absolute() else self.project / written
            if not book.is_file():  # a resume on another controller, whose project lacks it: fail, never skip
                return f"{call.kind}: no playbook {written} in the project {self.project}"
            record = self.records / f"{call.host}.{call.attempt}.{call.kind}.{hook.index}"
            result = run_playbook(PlaybookRun(
                playbook=book, project=self.project, inventory=list(self.inventory), limit=call.host,
                extravars={"golden_host": call.host, "golden_build": call.build,
                           "golden_previous_build": call.previous or "", "golden_run_id": self.run_id,
                           "golden_attempt": call.attempt},
                record=record, timeout_s=hook.timeout_s, vault_ids=list(self.vault_ids),
                vault_password_files=list(self.vault_password_files)))
            if not result.ok:
                return f"{call.kind} ({book.name}) {result.why()}; log: {result.log}"
        return ""
