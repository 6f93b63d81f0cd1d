"""``golden console HOST``: an inventory host's serial console over its BMC's Serial-over-LAN.

Interactive on a terminal (raw mode, ``~.`` to leave); otherwise it follows: what the console
prints goes to the output and/or a log file until Ctrl-C/SIGTERM or a time bound. Every session is
recorded in the audit history (who, when, which host, how); an interactive one also taints the
host, as a break-glass login does, because whoever typed may have changed it. The BMC's password
comes from the inventory like for every other BMC verb and never reaches argv, logs or errors.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from toolkit.bmc.sol import EscapeFilter, SolStream
from toolkit.core.errors import InputError
from toolkit.fleet.fleet import Fleet
from toolkit.inventory.hosts import Host

READ_S = 0.2
KEY_S = 0.05  # an interactive session alternates between the console and the keyboard this often
MAX_SECONDS = 7 * 24 * 3600.0


class ConsoleMode(StrEnum):
    """How a console session runs."""
    INTERACTIVE = "interactive"
    FOLLOW = "follow"


@dataclass(frozen=True)
class ConsolePlan:
    """A console session as planned: the host, how, for how long, where the log goes, why."""
    host: Host
    mode: ConsoleMode
    seconds: float | None = None
    log: Path | None = None
    to_output: bool = True  # follow: print what arrives (--log alone, or --json, only writes the file)
    force: bool = False
    reason: str = ""
    escape: bytes = b"~"


@dataclass(frozen=True)
class ConsoleResult:
    """How a console session ended: bytes seen, seconds, and why it stopped."""
    host: str
    mode: str
    bytes: int
    seconds: float
    ended: str  # "seconds", "interrupted", "escape"


def plan_console(fleet: Fleet, host: str, *, follow: bool, log: Path | None, seconds: float | None,
                 terminal: bool, force: bool = False, reason: str = "", escape: str = "~",
                 to_output: bool = True) -> ConsolePlan:
    """Everything checked before the BMC is contacted. Pure apart from reading the inventory."""
    found = fleet.host_by_name(host)
    if found is None:
        raise InputError(f"host {host!r} is not in the inventory", hint="golden fleet lists the hosts")
    if found.bmc is None or not found.bmc.address:
        raise InputError(f"host {host}: bmc_address is not set (needed to reach its console)",
                         hint="set bmc_address (and bmc_user, bmc_password) in its host or group vars")
    interactive = not follow and log is None
    if interactive and not terminal:
        raise InputError("golden console needs a terminal for an interactive session",
                         hint="pass --follow (print what arrives) or --log FILE")
    if interactive and seconds is not None:
        raise InputError("--seconds bounds a --follow or --log session, not an interactive one")
    if len(escape) != 1 or not escape.isprintable():
        raise InputError(f"--escape must be one printable character, got {escape!r}")
    if log is not None and (log.is_dir() or not log.parent.is_dir()):
        raise InputError(f"--log {log}: expected a file in an existing folder")
    mode = ConsoleMode.INTERACTIVE if interactive else ConsoleMode.FOLLOW
    return ConsolePlan(found, mode, seconds, log, follow and to_output, force, reason.strip()[:500],
                       escape.encode())


def record_session(fleet: Fleet, plan: ConsolePlan, user: str, now: float | None = None) -> None:
    """The audit row of a session (before it starts); an interactive session taints the host."""
    now = time.time() if now is None else now
    detail = plan.mode.value + (f", at most {plan.seconds:g} s" if plan.seconds else "") + (
        ", took the session over" if plan.force else "")
    with fleet.db.write() as repo:
        repo.add_audit(now, user, "console", plan.host.name, plan.reason, detail)
        if plan.mode == ConsoleMode.INTERACTIVE:
            running = repo.get_host(plan.host.name)  # as break-glass: the taint ends with a reimage
            repo.taint_host(plan.host.name, now, running.observed_build if running else None, "console",
                            f"interactive console by {user}" + (f": {plan.reason}" if plan.reason else ""))


@contextlib.contextmanager
def _sinks(plan: ConsolePlan, out: BinaryIO) -> Iterator[Callable[[bytes], None]]:
    with contextlib.ExitStack() as stack:
        targets: list[BinaryIO] = [out] if plan.to_output else []
        if plan.log is not None:
            targets.append(stack.enter_context(open(plan.log, "ab")))

        def write(data: bytes) -> None:
            for t in targets:
                t.write(data)
                t.flush()

        yield write


def follow(stream: SolStream, plan: ConsolePlan, out: BinaryIO, clock: Callable[[], float] = time.monotonic
           ) -> ConsoleResult:
    """Copy the console to the sinks until ``plan.seconds`` (or Ctrl-C/SIGTERM); never types anything."""
    started, seen, ended = clock(), 0, "interrupted"
    with _sinks(plan, out) as write:
        try:
            while plan.seconds is None or clock() - started < plan.seconds:
                data = stream.read(READ_S)
                if data:
                    seen += len(data)
                    write(data)
            ended = "seconds"
        except KeyboardInterrupt:
            pass
    return ConsoleResult(plan.host.name, plan.mode.value, seen, round(clock() - started, 3), ended)


def interact(stream: SolStream, plan: ConsolePlan, fd: int | None = None, out: BinaryIO | None = None
             ) -> ConsoleResult:
    """The terminal in raw mode: keys to the console (``~.`` leaves), the console to the screen."""
    fd = sys.stdin.fileno() if fd is None else fd
    out = out or sys.stdout.buffer
    started, seen, escape = time.monotonic(), 0, EscapeFilter(plan.escape)
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    ended = "interrupted"
    try:
        while True:
            data = stream.read(KEY_S)
            if data:
                seen += len(data)
                out.write(data)
                out.flush()
            ready, _, _ = select.select([fd], [], [], KEY_S)
            if ready:
                typed, leave = escape.feed(os.read(fd, 1024))
                stream.write(typed)
                if leave:
                    ended = "escape"
                    break
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return ConsoleResult(plan.host.name, plan.mode.value, seen, round(time.monotonic() - started, 3), ended)


def run_console(fleet: Fleet, plan: ConsolePlan, user: str, out: BinaryIO | None = None,
                on_open: Callable[[str], None] = lambda text: None) -> ConsoleResult:
    """Open SOL, record the session, run it as planned, always deactivate SOL at the end."""
    stream = SolStream(plan.host.endpoint, force=plan.force).open()
    try:
        record_session(fleet, plan, user)  # a session the BMC refused is no session
        if plan.mode == ConsoleMode.INTERACTIVE:
            on_open(f"[connected to {plan.host.name}'s console; {plan.escape.decode()}. to leave]")
            return interact(stream, plan)
        on_open(f"[following {plan.host.name}'s console; Ctrl-C to stop]")
        return follow(stream, plan, out or sys.stdout.buffer)
    finally:
        stream.close()
