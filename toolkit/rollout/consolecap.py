"""Capture each host's serial console (SOL) during a reimage attempt, in a process of its own.

Why a process: the BMC pool forks workers for every batch, and pyghmi running in the forking
process leaves its IO thread's locks behind held in the children (see toolkit.bmc.pool). So the
run starts ``python -m toolkit.rollout.consolecap DIR`` once and tells it, one JSON line at a time on
its stdin (never argv: the lines carry BMC passwords), which host's console to capture for which
attempt and when to stop. It writes ``DIR/<host>.<attempt>.log`` (toolkit.runs.console), bounded.

Capture never fails the reimage and delays it at most START_WAIT_S per wave: the power action waits
until each host's capture has opened its session or given up (its console file exists), so the
firmware's first words are in the file. Every send is a pipe write of a few hundred bytes; a BMC
without SOL, a session held by someone else or a dropped session is a ``[golden: ...]`` note in that
console file (and a log line), and a capture process that died is a warning once.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from toolkit.bmc.endpoint import BmcEndpoint
from toolkit.core.run import PIPE, spawn
from toolkit.core.secret import Secret
from toolkit.runs.console import MAX_CONSOLE_BYTES, TailBuffer, console_file, save_tail

log = logging.getLogger("golden.rollout")

FLUSH_S = 1.0
# SOL sessions at once per run: a 10,000-host reimage captures its first hosts, not every one
MAX_CAPTURES = 64
RETRY_S = 5.0  # after a refused or dropped session, try again this much later (the attempt goes on)
STOP_WAIT_S = 8.0
CLOSE_WAIT_S = 1.0
# a stopped capture reads on this long: what a host printed as its attempt ended (and a session
# that opened only after a quick failure) still reaches the file
STOP_GRACE_S = 3.0
# the power action waits this long at most for a wave's captures to open their sessions (or give up)
START_WAIT_S = 10.0


class ConsoleCapture:
    """The run's side: start and stop captures; the work happens in the capture process."""

    def __init__(self, directory: Path, limit: int = MAX_CAPTURES) -> None:
        self.directory = directory
        self.limit = limit
        self.active: set[str] = set()
        self.proc: Any = None
        self.broken = False

    def prepare(self) -> None:
        """Start the capture process ahead of the first power action (it takes a moment to start)."""
        if self.proc is None and not self.broken:
            self._send({"op": "ready"})

    def _spawn(self) -> Any:
        self.directory.mkdir(parents=True, exist_ok=True)
        root = str(Path(__file__).resolve().parent.parent.parent)
        with open(self.directory / "capture.log", "ab") as out:
            return spawn([sys.executable, "-m", "toolkit.rollout.consolecap", self.directory],
                         stdin=PIPE, stdout=out, env={"PYTHONPATH": root})

    def _send(self, message: dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            if self.proc is None:
                self.proc = self._spawn()
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (OSError, ValueError) as exc:  # the capture process is gone: the reimage goes on without it
            log.warning("console capture stopped (%s); the reimage goes on without consoles", exc)
            self.broken = True

    def start(self, host: str, attempt: int, bmc: BmcEndpoint) -> None:
        """Begin capturing ``host``'s console for ``attempt`` (returns at once; beyond ``limit`` at once, not)."""
        if host not in self.active and len(self.active) >= self.limit:
            return
        self.active.add(host)
        self._send({"op": "start", "host": host, "attempt": attempt, "address": bmc.address, "port": bmc.port,
                    "protocol": bmc.protocol.value, "user": bmc.user, "password": bmc.password.reveal()})

    def wait_started(self, hosts: list[tuple[str, int]], timeout: float = START_WAIT_S) -> list[str]:
        """Wait (at most ``timeout``) until each (host, attempt) capture opened its session or gave up, so a
        power action that follows is seen from the firmware's first line; the hosts still waiting."""
        waiting = [(h, a) for h, a in hosts if h in self.active]
        deadline = time.monotonic() + timeout
        while waiting and not self.broken:
            waiting = [(h, a) for h, a in waiting if not console_file(self.directory, h, a).exists()]
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        return [h for h, _ in waiting]

    def stop(self, host: str) -> None:
        """End ``host``'s capture (its file keeps what was seen)."""
        if host not in self.active:
            return
        self.active.discard(host)
        self._send({"op": "stop", "host": host})

    def close(self) -> None:
        """Tell the capture process to stop every capture and end; never waits long for it (it
        deactivates each SOL session and exits by itself)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.write(b'{"op": "quit"}\n')
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=CLOSE_WAIT_S)
        except Exception:  # still closing its sessions: the run does not wait for that  # noqa: S110
            pass


# ---------------------------------------------------------------------------------------------
# the capture process


class _Capture:
    """One host's console for one attempt: a thread reading SOL into a bounded file."""

    def __init__(self, directory: Path, host: str, attempt: int, bmc: BmcEndpoint) -> None:
        self.path = console_file(directory, host, attempt)
        self.bmc = bmc
        self.buffer = TailBuffer(MAX_CONSOLE_BYTES)
        self.stop_by: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"capture-{host}")
        self.thread.start()

    @property
    def running(self) -> bool:
        """Until the grace after a stop is over."""
        return self.stop_by is None or time.monotonic() < self.stop_by

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Stop reading ``grace`` seconds from now (sooner if already asked)."""
        until = time.monotonic() + grace
        self.stop_by = until if self.stop_by is None else min(self.stop_by, until)

    def note(self, text: str) -> None:
        """A line of golden's own in the console file (and the capture log)."""
        log.info("%s: %s", self.bmc.name, text)
        self.buffer.add(f"\n[golden: {time.strftime('%H:%M:%S')} {text}]\n".encode())
        save_tail(self.path, self.buffer)

    def _run(self) -> None:
        from toolkit.bmc.base import BmcError
        from toolkit.bmc.sol import SolStream

        while self.running:
            try:
                stream = SolStream(self.bmc, force=False).open()
            except BmcError as exc:
                self.note(f"console capture could not start: {exc.message}")
                self._sleep(RETRY_S)
                continue
            self.note("console capture started")
            try:
                self._copy(stream)
            except BmcError as exc:
                self.note(f"console session dropped: {exc.message}")
                self._sleep(RETRY_S)
            finally:
                stream.close()
        save_tail(self.path, self.buffer)

    def _copy(self, stream: Any) -> None:
        last = time.monotonic()
        while self.running:
            data = stream.read(0.5)
            if data:
                self.buffer.add(data)
            if time.monotonic() - last >= FLUSH_S:
                save_tail(self.path, self.buffer)
                last = time.monotonic()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.running and time.monotonic() < deadline:
            time.sleep(0.2)


def _endpoint(msg: dict[str, Any]) -> BmcEndpoint:
    from toolkit.bmc.endpoint import BmcProtocol

    return BmcEndpoint(name=str(msg["host"]), address=str(msg["address"]), port=int(msg["port"]),
                       protocol=BmcProtocol(msg.get("protocol", "ipmi")), user=str(msg["user"]),
                       password=Secret(str(msg["password"])))


def serve(directory: Path, commands: IO[str]) -> int:
    """Run captures as the commands on ``commands`` say, until quit or end of input."""
    captures: dict[str, _Capture] = {}
    every: list[_Capture] = []
    grace = STOP_GRACE_S  # input ended without a quit: the run died; keep what its hosts print a moment longer
    for line in commands:
        try:
            msg = json.loads(line)
            if msg["op"] == "quit":
                grace = 0.0
                break
            if msg["op"] == "ready":
                continue
            old = captures.pop(str(msg["host"]), None)
            if old is not None:  # its SOL session must end before the next attempt's can start
                old.stop(0 if msg["op"] == "start" else STOP_GRACE_S)
                if msg["op"] == "start":
                    old.thread.join(timeout=STOP_WAIT_S)
            if msg["op"] == "start":
                captures[str(msg["host"])] = _Capture(directory, str(msg["host"]), int(msg["attempt"]), _endpoint(msg))
                every.append(captures[str(msg["host"])])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a capture command: %s", type(exc).__name__)  # never the line: it has a password
    deadline = time.monotonic() + STOP_WAIT_S
    for c in every:
        if c.stop_by is None:  # one already stopped keeps its grace: its attempt just ended
            c.stop(grace)
    for c in every:
        c.thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m toolkit.rollout.consolecap DIR``: commands on stdin (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m toolkit.rollout.consolecap DIR (commands on stdin)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    return serve(Path(args[0]), sys.stdin)


if __name__ == "__main__":
    sys.exit(main())
