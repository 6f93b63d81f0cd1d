"""Run one of the operators' own playbooks on the controller, through ansible-runner.

The one place golden starts ``ansible-playbook`` around a reimage (drain, verify, undrain). What
runs is the user's: their playbook, their inventory sources, their vault ids and password files,
their ``ansible.cfg`` (the project folder is the working directory). golden adds only extra vars
(written by ansible-runner into its private folder, never on the command line) and a ``--limit``.

A run leaves a record the ansible-runner way: ``<record>/artifacts/<ident>/{command, rc, status,
stdout, job_events/}``; every output line also goes to ``<record>.log`` as it is printed, so a
hook that hangs can be read while it hangs.

The timeout is ours, not ansible-runner's: its own kills only ``ansible-playbook``'s process group,
and Ansible's workers call ``setsid()``, so a hung task (a ``shell`` on the controller) would
outlive it. Every process of a run carries ``GOLDEN_HOOK_RUN=<id>`` in its environment (a
process inherits it even when it double-forks away from its parent, as ``nohup … &`` and
``async:`` tasks do); at the deadline, or when ``cancel_all()`` is called (Ctrl-C), every process
holding this run's id is killed, round after round until none is left.

ansible-runner writes the whole environment of the run into ``artifacts/<id>/command``; golden
rewrites that file so it keeps only the variables golden set (a state URL with a password, a
PGPASSWORD or a token in the controller's environment must not land in a run record).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core.errors import ToolMissingError
from toolkit.core.run import kill_tree

FAILED_EVENTS = ("runner_on_failed", "runner_on_unreachable")


@dataclass(frozen=True)
class PlaybookRun:
    """What to run: a playbook of the project against the user's inventory, for some hosts."""

    playbook: Path
    project: Path
    inventory: Sequence[str]
    limit: str
    extravars: Mapping[str, Any]
    record: Path  # a folder of its own: ansible-runner's private data dir
    timeout_s: float
    vault_ids: Sequence[str] = ()
    vault_password_files: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlaybookResult:
    """How the run ended: ``status`` is ansible-runner's (successful, failed, timeout, canceled)."""

    status: str
    rc: int
    failed_task: str = ""  # the last task that failed (or was unreachable), with its host
    message: str = ""  # that task's first line of message
    log: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def why(self) -> str:
        """One line: what went wrong, for an error message and the journal."""
        if self.ok:
            return ""
        if self.status == "canceled":
            return "stopped by an interrupt (killed with everything it started)"
        if self.status == "timeout":
            last = f"; last task {self.failed_task!r}" if self.failed_task else ""
            return f"did not finish within its timeout (killed with everything it started{last})"
        if self.failed_task:
            return f"task {self.failed_task!r} failed: {self.message or 'no message'}"
        if self.message:
            return self.message
        return f"ansible-playbook ended {self.status} (rc {self.rc}); see {self.log}"


def search_path() -> str:
    """PATH for ansible-runner: this Python's bin folder first (a venv's bin need not be on PATH)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    if shutil.which("ansible-playbook", path=path) is None:
        raise ToolMissingError("ansible-playbook not found.", hint="install golden's dependencies (scripts/bootstrap)")
    return path


def _cmdline(run: PlaybookRun) -> str:
    # File paths and vault id labels only: a vault password never reaches a command line.
    words: list[str] = []
    for vid in run.vault_ids:
        words += ["--vault-id", vid]
    for f in run.vault_password_files:
        words += ["--vault-password-file", f]
    return shlex.join(words)


class _Events:
    """Follows the run's events: writes every output line to the log and remembers the last failure."""

    def __init__(self, log: Path, on_line: Callable[[str], None] | None) -> None:
        self.file = log.open("a", encoding="utf-8", errors="replace")
        self.on_line = on_line
        self.task = ""
        self.failed_task = ""
        self.message = ""
        self.no_hosts = False
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        if event.get("event") == "playbook_on_no_hosts_matched":
            self.no_hosts = True  # a hook that ran on no host did nothing: that is a failure, not a pass
        if event.get("event") == "playbook_on_task_start":
            self.task = str(data.get("task") or "")
        if event.get("event") in FAILED_EVENTS and not data.get("ignore_errors"):
            res = data.get("res") or {}
            msg = str(res.get("msg") or res.get("stderr") or "").strip().splitlines()
            self.failed_task = f"{data.get('task', '?')}"
            self.message = f"{data.get('host', '?')}: {msg[0] if msg else 'failed'}"[:300]
        text = str(event.get("stdout") or "")
        with self.lock:
            if text:
                self.file.write(text + "\n")
                self.file.flush()
        if text and self.on_line:
            for line in text.splitlines():
                if line.strip():
                    self.on_line(line)
        return True

    def close(self) -> None:
        self.file.close()


MARK = "GOLDEN_HOOK_RUN"
_CANCEL = threading.Event()


def cancel_all() -> None:
    """Stop every playbook this process is running (Ctrl-C): each is killed at its next check, within a second."""
    _CANCEL.set()


def _marked(mark: bytes) -> list[int]:
    """Every process whose environment holds ``mark`` (our own process never does)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if mark in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def kill_marked(run_id: str, rounds: int = 20) -> None:
    """SIGKILL every process of this run, again until none is left (a parent may fork while it dies)."""
    mark = f"{MARK}={run_id}".encode()
    for _ in range(rounds):
        pids = _marked(mark)
        if not pids:
            return
        for pid in pids:
            kill_tree(pid)
        time.sleep(0.05)


class _Deadline:
    """ansible-runner's cancel callback: at the deadline (or on cancel_all), kill everything the run started."""

    def __init__(self, run_id: str, timeout_s: float) -> None:
        self.run_id = run_id
        self.at = time.monotonic() + timeout_s
        self.expired = False
        self.canceled = False

    def __call__(self) -> bool:
        if time.monotonic() < self.at and not _CANCEL.is_set():
            return False
        if not (self.expired or self.canceled):
            self.canceled = _CANCEL.is_set()
            self.expired = not self.canceled
            kill_marked(self.run_id)
        return True


def _scrub_record(record: Path, kept: set[str]) -> None:
    """Keep only golden's own variables in the ``command`` files ansible-runner wrote (see the module doc)."""
    for path in (record / "artifacts").glob("*/command"):
        try:
            data = json.loads(path.read_text())
            data["env"] = {k: v for k, v in (data.get("env") or {}).items() if k in kept}
            path.write_text(json.dumps(data))
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # unreadable: better no record of the command than a leak


def run_playbook(run: PlaybookRun, on_line: Callable[[str], None] | None = None) -> PlaybookResult:
    """Run the playbook to its end or its timeout; never raises for a playbook that fails."""
    import ansible_runner  # imported here: the CLI must not pay for it when no hook runs

    run.record.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = run.record.with_suffix(".log")
    events = _Events(log, on_line)
    started = time.monotonic()
    run_id = uuid.uuid4().hex
    deadline = _Deadline(run_id, run.timeout_s)
    envvars = {"PATH": search_path(), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
               "ANSIBLE_RETRY_FILES_ENABLED": "0", MARK: run_id, **dict(run.env)}
    try:
        r = ansible_runner.run(
            private_data_dir=str(run.record), project_dir=str(run.project), playbook=str(run.playbook),
            inventory=[str(i) for i in run.inventory], limit=run.limit, extravars=dict(run.extravars),
            envvars=envvars, cmdline=_cmdline(run) or None, cancel_callback=deadline,
            settings={"pexpect_timeout": 1}, event_handler=events, quiet=True, json_mode=False,
        )
    finally:
        events.close()
        kill_marked(run_id, rounds=3)  # anything it left running in the background ends with it
        _scrub_record(run.record, set(envvars))
    seconds = round(time.monotonic() - started, 2)
    status = "timeout" if deadline.expired else "canceled" if deadline.canceled else str(r.status)
    failed = events.task if deadline.expired else events.failed_task
    if events.no_hosts and status == "successful":
        return PlaybookResult("failed", 0, "", f"its play matched no host with --limit {run.limit}", log, seconds)
    return PlaybookResult(status, int(r.rc if r.rc is not None else -1), failed, events.message, log, seconds)
