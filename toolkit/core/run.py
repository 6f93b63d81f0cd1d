"""The only module that starts processes.

Every external command goes through run() (wait for it) or spawn() (leave it running).
Under --debug each command is logged as ``+ <shell-quoted command>``. Commands get a
minimal environment plus what the caller passes; secrets must never be passed in argv.
"""

from __future__ import annotations

import collections
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from toolkit.core.errors import CommandError, ToolMissingError

log = logging.getLogger("golden.run")

# Variables passed through from our own environment to every child.
_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER", "LOGNAME", "VIRTUAL_ENV")

TAIL_LINES = 40
# For callers of spawn() outside core, which never import subprocess themselves.
PIPE = subprocess.PIPE
Process = subprocess.Popen


def base_env(extra: Mapping[str, str] | None = None, *, inherit: bool = False) -> dict[str, str]:
    """The minimal environment children get (or ours, with ``inherit``), with ``extra`` laid over it."""
    env = dict(os.environ) if inherit else {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    if extra:
        env.update(extra)
    return env


def which(program: str) -> str | None:
    """The path of ``program`` on the children's PATH, or None."""
    return shutil.which(program, path=base_env()["PATH"])


def require(program: str, package: str | None = None) -> str:
    """Return the path of ``program`` or raise ToolMissingError naming the package to install."""
    path = which(program)
    if path is None:
        pkg = package or program
        raise ToolMissingError(f"{program} not found.", hint=f"install it: apt-get install {pkg}")
    return path


def describe(cmd: Sequence[str | os.PathLike[str]]) -> str:
    """A command as a shell would quote it (for logs and messages)."""
    return shlex.join(str(c) for c in cmd)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    capture: bool = False,
    input: str | bytes | None = None,
    timeout: float | None = None,
    log_path: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion.

    With ``log_path`` or ``on_line`` the combined output is streamed: written to the log
    file and handed line by line to ``on_line`` (progress). Otherwise output is captured
    when ``capture`` is set and inherited when not. On Ctrl-C or SIGTERM the whole process
    group is killed before the exception propagates, so nothing is left running.
    """
    argv = [str(c) for c in cmd]
    described = describe(argv)
    log.debug("+ %s", described)
    full_env = base_env(env, inherit=inherit_env)
    streaming = log_path is not None or on_line is not None
    try:
        proc = subprocess.Popen(
            argv,
            env=full_env,
            cwd=cwd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if (capture or streaming) else None,
            stderr=(subprocess.STDOUT if streaming else subprocess.PIPE) if (capture or streaming) else None,
            text=not isinstance(input, bytes),
            start_new_session=True,
        )
    except FileNotFoundError:
        raise ToolMissingError(f"{argv[0]} not found.", hint=f"install the package that provides {argv[0]}") from None

    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    stdout = stderr = ""
    try:
        if streaming:
            assert proc.stdout is not None
            logf: IO[str] | None = open(log_path, "a", encoding="utf-8") if log_path else None
            try:
                if input is not None and proc.stdin:
                    proc.stdin.write(input)
                    proc.stdin.close()
                for line in proc.stdout:
                    tail.append(line.rstrip("\n"))
                    if logf:
                        logf.write(line)
                        logf.flush()
                    if on_line:
                        on_line(line.rstrip("\n"))
                proc.wait(timeout=timeout)
            finally:
                if logf:
                    logf.close()
            stdout = "\n".join(tail)
        else:
            stdout, stderr = proc.communicate(input=input, timeout=timeout)
            stdout = stdout or ""
            stderr = stderr or ""
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise CommandError(f'"{described}" did not finish within {timeout:g} s', returncode=-1) from None
    except BaseException:
        kill_group(proc)
        raise

    rc = proc.returncode
    if rc == 127 and not streaming and "not found" in (stderr or ""):
        raise ToolMissingError(f"{argv[0]} not found.")
    if check and rc != 0:
        out_tail = "\n".join(tail) if streaming else "\n".join((stderr or stdout or "").splitlines()[-TAIL_LINES:])
        label = what or f'"{described}"'
        raise CommandError(f"{label} returned non-zero exit code {rc}", returncode=rc, log_tail=out_tail)
    return subprocess.CompletedProcess(argv, rc, stdout, stderr)


def spawn(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout: IO[bytes] | int | None = subprocess.DEVNULL,
    stderr: IO[bytes] | int | None = subprocess.STDOUT,
    stdin: IO[bytes] | int | None = subprocess.DEVNULL,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a long-running process (QEMU, dnsmasq, nginx, a server) and return its handle."""
    argv = [str(c) for c in cmd]
    log.debug("+ %s &", describe(argv))
    try:
        return subprocess.Popen(
            argv, env=base_env(env), cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
            start_new_session=new_session,
        )
    except FileNotFoundError:
        raise ToolMissingError(f"{argv[0]} not found.") from None


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate a process and its whole process group; escalate to SIGKILL after ``grace``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children first), read from /proc."""
    out: list[int] = []
    todo = _children(pid)
    while todo:
        child = todo.pop(0)
        if child not in out:
            out.append(child)
            todo += _children(child)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, deepest first (a child that called setsid() too)."""
    below = descendants(pid)
    _signal_all([*reversed(below), pid], signal.SIGKILL)


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue


def run_threaded(
    call: Callable[[], Any],
    *,
    log_path: Path,
    described: str,
    on_line: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    grace: float = 60.0,
) -> Any:
    """Run ``call`` (a library that starts a process and writes its output to ``log_path``) in a
    worker thread; return what it returns.

    Such libraries (packerpy) buffer output until the process exits and give neither the process
    nor an environment, so a loop here streams ``log_path`` to ``on_line`` while it runs, ``env``
    is laid over ours meanwhile (one such run at a time in a process), and on Ctrl-C, SIGTERM or
    ``timeout`` the child gets SIGINT (time to clean up after itself), then after ``grace``
    everything below us is killed.
    """
    log.debug("+ %s", described)
    saved = {k: os.environ.get(k) for k in (env or {})}
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # handed to the waiting thread
            result["error"] = exc

    os.environ.update(env or {})
    worker = threading.Thread(target=target, name=f"run-{os.path.basename(described.split()[0])}", daemon=True)
    start = log_path.stat().st_size  # the first lines may land before _follow opens the file
    try:
        worker.start()
        _follow(log_path, start, worker, on_line, timeout, described)
    except BaseException:
        _stop_children(worker, grace)
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if "error" in result:
        raise result["error"]
    return result["value"]


def _follow(path: Path, start: int, worker: Any, on_line: Callable[[str], None] | None, timeout: float | None,
            described: str) -> None:
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    with open(path, encoding="utf-8", errors="replace") as f:
        f.seek(start)
        pending = ""
        while True:
            alive = worker.is_alive()
            chunk = f.read()
            if chunk:
                pending += chunk
                *lines, pending = pending.split("\n")
                for line in lines:
                    if on_line:
                        on_line(line)
            if not alive:
                if pending and on_line:
                    on_line(pending)
                return
            if deadline is not None and time.monotonic() > deadline:
                pending += f.read()  # what it wrote last is what says why
                for line in pending.split("\n") if pending else []:
                    if on_line:
                        on_line(line)
                raise CommandError(f'"{described}" did not finish within {timeout:g} s', returncode=-1)
            worker.join(0.2)


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _stop_children(worker: Any, grace: float) -> None:
    """SIGINT to our child (packer cleans up after itself), then SIGKILL to whatever is left of it.

    What ran below us before the SIGINT is remembered (with each process's start time, so a reused
    PID is never hit): a child packer failed to stop is re-parented to init once packer exits, and
    would no longer be found below us. A second Ctrl-C meanwhile is ignored: the signal mask holds
    only in this thread, and packer's worker thread would take it and cut the sweep short.
    """
    before = [(pid, _start_time(pid)) for pid in descendants(os.getpid())]
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _signal_all(_children(os.getpid()), signal.SIGINT)  # packer: our only child while it runs
        worker.join(grace)
        left = [pid for pid, started in before if started is not None and _start_time(pid) == started]
        now = descendants(os.getpid())
        _signal_all(list(reversed(now)) + [pid for pid in reversed(left) if pid not in now], signal.SIGKILL)
        worker.join(10.0)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
