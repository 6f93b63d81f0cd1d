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

5. The re-login inside a command itself (the root cause behind 4). pyghmi's ``Session._timedout``
   answers a command that ran out of retries on an established session by logging in again from
   inside that command's wait; the nested ``_req_priv_level -> raw_command`` then sits in
   ``_cmdwait`` until the outer command's in-command deadline has passed, and the keepalives of
   other idle sessions in the process pile their own re-logins on top. Our ``_timedout`` never
   logs in again on an established session: the command fails at once as "Session no longer
   connected" (its in-command time cleared first, so the logout that ``_mark_broken`` sends does
   not wait for it either), and the caller (IpmiClient) logs in anew outside any command and
   retries that command once on the new session. A login (every phase before ESTABLISHED) keeps
   pyghmi's re-login on a lost RAKP or channel reply, but under a deadline of its own
   (LOGIN_TIMEOUT_S from its start): past it the login fails instead of starting over again.
   Upstream: replaces ``pyghmi.ipmi.private.session.Session._timedout`` and wraps
   ``Session.login``. It could go upstream as an option (a session that fails its command rather
   than healing it in place suits callers that retry themselves; pyghmi's own callers — confluent's
   long-lived console sessions — rely on the in-place heal, so not as the default).

apply() is idempotent and must run before the first pyghmi session or server is created.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

WAKE_SLACK_S = 0.05  # past the deadline, so the IO thread (if it is on time) wakes us first
# A login's own deadline: five exchanges, each retried by pyghmi within ~2 s, with a re-login or two
LOGIN_TIMEOUT_S = 12.0
_INF = float("inf")

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


def _login(self: Any) -> None:
    """pyghmi's Session.login, with the login's deadline stamped at its first start (a privilege
    downgrade in RAKP2 calls login() again: the same login, the same deadline)."""
    from pyghmi.ipmi.private import session

    if getattr(self, "golden_login_deadline", None) is None:
        self.golden_login_deadline = session._monotonic_time() + LOGIN_TIMEOUT_S
    _ORIGINAL["login"](self)


def _fail_session(self: Any, *, in_login: bool) -> None:
    """End the session now: a login gets pyghmi's timeout answer, a command finds it broken."""
    if in_login:
        self.ipmicallback({"error": "timeout", "code": 0xFFFF})
    self.incommand = False  # the command is over: the logout _mark_broken sends must not wait for it
    self.lastpayload = None
    self.nowait = False
    self._mark_broken()


def _timedout(self: Any) -> None:
    """pyghmi's Session._timedout without the re-login inside a command (see the docstring, 5)."""
    from pyghmi.ipmi.private import session

    if not self.lastpayload:
        return
    self.nowait = True
    self.timeout += 1
    established = self.sessioncontext == "ESTABLISHED"
    late = session._monotonic_time() > (getattr(self, "golden_login_deadline", None) or _INF)
    if self.timeout > self.maxtimeout and (established or not self.logontries):
        return _fail_session(self, in_login=not established)
    if not established and late:
        return _fail_session(self, in_login=True)
    if self.timeout > self.maxtimeout:
        self.maxtimeout = 2
        self._relog()
    elif self.sessioncontext == "FAILED":
        self.lastpayload = None
        self.onlogpayload = None
    elif self.sessioncontext == "OPENSESSION":
        self.lastpayload = None  # a new request (new session id): unambiguous whatever was lost
        self._open_rmcpplus_request()
    elif self.sessioncontext in ("EXPECTINGRAKP2", "EXPECTINGRAKP4"):
        self._relog()  # a BMC does not take RAKP1 or RAKP3 twice: start over
    else:
        self.hasretried = 1  # an IPMI request is resent as if idempotent (pyghmi's taboo tracking)
        self.send_payload()
    self.nowait = False


_ORIGINAL: dict[str, Any] = {}


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
    _ORIGINAL["login"] = session.Session.login
    session.Session.login = _login
    session.Session._timedout = _timedout
    _APPLIED = True


def forget_login(address: str, user: str, password: str, port: int) -> None:
    """Drop pyghmi's half-open session for that login, so the next attempt starts afresh."""
    from pyghmi.ipmi.private import session

    session.Session.initting_sessions.pop((address, user, password, port, None), None)
