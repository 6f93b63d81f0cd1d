"""Two concurrency bugs in pyghmi 1.6 that bite with many BMCs at once, fixed in place.

1. Its sockets are shared between sessions. ``_io_sendto`` switches a socket to blocking mode
   while the IO thread's ``_io_recvfrom`` switches it back to non-blocking before reading; when a
   sender thread wins that race the IO thread blocks in recvfrom on an empty socket and every
   session in the process stalls (seen with 64 threads against 500 BMCs, and in the virtual BMC
   server). We send and receive with MSG_DONTWAIT instead and never touch the blocking mode.
2. Its session tables are guarded by two RLocks taken in opposite orders on different paths (a
   login timing out under WAITING_SESSIONS logs out under KEEPALIVE_SESSIONS, the event loop
   does the reverse): a deadlock once replies get lost. One shared RLock cannot invert.

3. A login that failed can stay in ``Session.initting_sessions``; the next login to the same BMC
   then "joins" it and waits forever for a session nobody drives. forget_login() drops the entry
   before a fresh login (the pool allows one command per BMC at a time, so an entry found then
   is always stale).

4. A waiter can miss its wake-up: ``_io_wait`` queues (deadline, event) for the IO thread and
   waits on the event with no timeout, trusting the IO thread to set it by the deadline. At 10,000
   BMCs with 5% of replies lost, worker processes sat for many minutes with no CPU in
   ``_io_wait`` long past its deadline while their IO thread idled in its 300 s ``select`` — each
   time in a re-login nested inside a command (``raw_command -> awaitresponse -> ... _got_rakp4 ->
   _req_priv_level -> raw_command -> _cmdwait``, the inner command waiting for the outer one's
   in-command deadline). Our ``_io_wait`` is pyghmi's with the wait bounded by its own deadline;
   every caller loops on its own condition, so waking at the deadline is what the IO thread should
   have done, and the nested wait ends when the outer command's time is up.

apply() is idempotent and must run before the first pyghmi session or server is created.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

WAKE_SLACK_S = 0.05  # past the deadline, so the IO thread (if it is on time) wakes us first

_APPLIED = False


def _io_sendto(mysocket: Any, packet: Any, sockaddr: Any) -> None:
    if hasattr(mysocket, "fd"):
        mysocket = mysocket.fd
    try:
        mysocket.sendto(packet, socket.MSG_DONTWAIT, sockaddr)
    except Exception:  # noqa: S110 - same as pyghmi: a lost datagram is handled by its retry logic
        pass


def _io_recvfrom(mysocket: Any, size: int) -> Any:
    try:
        return mysocket.recvfrom(size, socket.MSG_DONTWAIT)
    except OSError:
        return None


def _io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
    from pyghmi.ipmi.private import session

    evt = threading.Event()
    if evq is not None:
        evq.append(evt)
    deadline = timeout + session._monotonic_time()
    session.ioqueue.append((deadline, evt, myaddr))
    if deadline < session.selectdeadline:  # the IO thread sleeps past our deadline: break into its select
        wake = session.iosockets[0]
        wake.sendto(b"\x01", (session.myself, wake.getsockname()[1]))
    evt.wait(max(0.0, deadline - session._monotonic_time()) + WAKE_SLACK_S)


def apply() -> None:
    """Patch pyghmi once (see the module docstring for why)."""
    global _APPLIED
    if _APPLIED:
        return
    from pyghmi.ipmi.private import session

    session._io_sendto = _io_sendto
    session._io_recvfrom = _io_recvfrom
    session._io_wait = _io_wait
    session.WAITING_SESSIONS = session.KEEPALIVE_SESSIONS
    _APPLIED = True


def forget_login(address: str, user: str, password: str, port: int) -> None:
    """Drop pyghmi's half-open session for that login, so the next attempt starts afresh."""
    from pyghmi.ipmi.private import session

    session.Session.initting_sessions.pop((address, user, password, port, None), None)
