"""The boot server's connections: who holds a socket, for how long, and which thread works on it.

A connection costs a thread only while one of its requests is being worked on. New and
keep-alive connections wait in one selector thread (the waiting room) until a whole request head
has arrived; then one of a fixed number of worker threads handles that one request and hands the
connection back. A client that connects and says nothing, or trickles its headers (slowloris),
holds a file descriptor and a few hundred bytes, never a worker. The limits (``Limits``):

- ``idle_timeout_s``: a waiting connection with no request started within it is closed.
- ``header_timeout_s``: a request head must be complete this long after its first byte.
- ``io_timeout_s``: each of a worker's writes (and reads, should a handler ever need one).
- ``body_timeout_s``, ``max_body_bytes``, ``max_body_readers``: a request body is read in the waiting
  room too, never by a worker: its head is framed strictly first (``toolkit.boot.framing``: one
  Content-Length, no Transfer-Encoding, else 400; over ``max_body_bytes``, 413), then the whole body
  must arrive within ``body_timeout_s`` (else 408), and at most ``max_body_readers`` connections
  read bodies at once (one more gets 503 at once). A slow ``POST /report`` therefore holds a file
  descriptor and at most ``max_body_bytes``, never a thread, and ``/boot`` never waits for it.
- ``max_connections``: past it the oldest waiting connection is closed, so new clients get in.
- ``workers`` + ``queue``: a request finding both full waits in the waiting room (no thread, no
  reading) for ``queue_wait_s``, then is answered 503 with Retry-After: a boot storm is served
  late rather than refused (iPXE falls through to the disk on a failed /boot).
- ``fast_workers``: a lane of its own for requests the caller's ``is_transfer`` says are not
  long transfers (boot scripts, reports, metrics), so 64 machines pulling a squashfs cannot make
  the 65th wait minutes for its boot script.
"""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.boot.framing import FramingError, frame_request

log = logging.getLogger("golden.serve")

BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                 b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n")
TOO_LARGE_RESPONSE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                      b"Connection: close\r\n\r\n")
BODY_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
PHRASES = {400: "Bad Request", 413: "Content Too Large"}
QUIET_S = 10.0  # a limit that keeps being hit is logged at most once per this, with how often


class QuietLog:
    """Warnings that a flood would repeat: one line per kind at most every QUIET_S, saying how many were held back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._noted: dict[str, tuple[float, int]] = {}  # kind -> (last logged, held back since)

    def warn(self, kind: str, fmt: str, *args: object) -> None:
        """Log a warning of this kind at most once per quiet period, counting those held back."""
        now = time.monotonic()
        with self._lock:
            last, held = self._noted.get(kind, (-QUIET_S, 0))
            self._noted[kind] = (now, 0) if now - last >= QUIET_S else (last, held + 1)
        if now - last >= QUIET_S:
            log.warning(fmt + " (%d more since the last such line)", *args, held)


def error_response(status: int, reason: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    body = f"{reason}\n".encode("latin-1", "replace")
    return (f"HTTP/1.1 {status} {PHRASES.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Limits:
    """How much the boot server takes on: workers, queue, connections, timeouts and head size."""
    workers: int = 64
    fast_workers: int = 8
    queue: int = 256
    queue_wait_s: float = 10.0
    max_connections: int = 4096
    idle_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    io_timeout_s: float = 30.0
    max_head_bytes: int = 64 * 1024
    drain_s: float = 5.0
    body_timeout_s: float = 10.0
    max_body_bytes: int = 64 * 1024
    max_body_readers: int = 128


class Conn:
    """One client connection: its socket, and bytes received but not yet handled."""

    __slots__ = ("addr", "body_since", "buf", "head_started", "need", "since", "sock")

    def __init__(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        self.sock = sock
        self.addr = addr
        self.buf = bytearray()
        self.since = time.monotonic()
        self.head_started = 0.0
        self.need = 0  # while reading a body: the bytes head and body add up to
        self.body_since = 0.0

    def has_head(self) -> bool:
        """True once a whole request head is buffered."""
        return b"\r\n\r\n" in self.buf or b"\n\n" in self.buf

    def close(self) -> None:
        """Close the socket (an error closing it is ignored)."""
        try:
            self.sock.close()
        except OSError:
            pass


class SocketReader:
    """A handler's ``rfile``: the bytes already received first, then the socket, within one deadline.

    Whatever a read leaves in ``buf`` (a pipelined next request) stays with the connection.
    """

    def __init__(self, sock: socket.socket, buf: bytearray, timeout_s: float) -> None:
        self._sock = sock
        self.buf = buf
        self._deadline = time.monotonic() + timeout_s

    def _fill(self) -> bool:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request body not received in time")
        self._sock.settimeout(left)
        data = self._sock.recv(65536)
        self.buf += data
        return bool(data)

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def readline(self, limit: int = -1) -> bytes:
        """One line of at most ``limit`` bytes, reading more only as needed."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0 and (limit < 0 or i < limit):
                return self._take(i + 1)
            if 0 <= limit <= len(self.buf) or not self._fill():
                return self._take(len(self.buf) if limit < 0 else limit)

    def read(self, n: int = -1) -> bytes:
        """``n`` bytes (all until EOF when negative), reading more only as needed."""
        while (n < 0 or len(self.buf) < n) and self._fill():
            pass
        return self._take(len(self.buf) if n < 0 else n)

    def close(self) -> None:
        """Nothing: the connection outlives its requests."""
        pass  # the connection outlives its requests


class ConnectionPool:
    """The waiting room (one selector thread) and the workers (a fixed number of threads).

    ``handle(conn)`` runs one request on a worker and returns True to keep the connection open.
    """

    def __init__(self, limits: Limits, handle: Callable[[Conn], bool],
                 is_transfer: Callable[[bytes], bool] = lambda head: True) -> None:
        self.limits = limits
        self._handle = handle
        self._is_transfer = is_transfer
        self._sel = selectors.DefaultSelector()
        self._waiting: dict[int, Conn] = {}  # by fd, oldest first (re-inserted on every return)
        self._incoming: queue.SimpleQueue[Conn] = queue.SimpleQueue()
        self._work: queue.Queue[Conn | None] = queue.Queue(maxsize=limits.queue)  # transfers
        self._fast: queue.Queue[Conn | None] = queue.Queue(maxsize=limits.queue)  # everything else
        # requests whose lane was full, oldest first, with when they first found it full (reactor thread only)
        self._deferred: dict[int, deque[tuple[float, Conn]]] = {id(self._work): deque(), id(self._fast): deque()}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self.busy = 0
        self.body_readers = 0  # connections in the waiting room reading a body (reactor thread only)
        self.closed: Counter[str] = Counter()  # why connections were closed by us
        self.quiet = QuietLog()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name="golden-serve-wait", daemon=True)]
        self._threads += [threading.Thread(target=self._worker, args=(self._work,), name=f"golden-serve-{i}",
                                           daemon=True) for i in range(limits.workers)]
        self._threads += [threading.Thread(target=self._worker, args=(self._fast,), name=f"golden-serve-fast-{i}",
                                           daemon=True) for i in range(limits.fast_workers)]
        for t in self._threads:
            t.start()

    # ---- from other threads ----
    def add(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        """A freshly accepted connection (the accept thread never waits here)."""
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self._to_waiting_room(Conn(sock, addr))

    def _queued(self) -> int:
        return self._work.qsize() + self._fast.qsize() + self._deferred_count()

    def stats(self) -> dict[str, float]:
        """Connections waiting, busy and queued, and the workers, for /metrics."""
        with self._lock:
            return {"waiting": len(self._waiting), "busy": self.busy, "queued": self._queued(),
                    "workers": self.limits.workers + self.limits.fast_workers}

    def closed_counts(self) -> Counter[str]:
        """Connections closed so far, by reason."""
        with self._lock:
            return Counter(self.closed)

    def drain(self, seconds: float) -> bool:
        """Stop taking requests, close waiting connections, give in-flight ones ``seconds``; True when all finished."""
        self._stopping.set()
        self._wake()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (self.busy or self._queued()):
            time.sleep(0.05)
        finished = not (self.busy or self._queued())
        for q, n in ((self._work, self.limits.workers), (self._fast, self.limits.fast_workers)):
            for _ in range(n):
                try:
                    q.put_nowait(None)
                except queue.Full:
                    break  # workers are daemon threads: the process exits without them
        return finished

    # ---- internals ----
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _count_closed(self, conn: Conn, reason: str) -> None:
        with self._lock:
            self.closed[reason] += 1
        log.debug("golden serve: %s:%s: closed (%s)", conn.addr[0], conn.addr[1], reason)
        conn.close()

    def _refuse(self, conn: Conn, response: bytes, reason: str) -> None:
        """Answer and close a connection the reactor will not take further; logged, at most every QUIET_S."""
        self._forget(conn)
        try:
            conn.sock.send(response)
        except OSError:
            pass
        self._count_closed(conn, reason)
        self.quiet.warn(reason, "golden serve: %s from %s", reason.replace("_", " "), conn.addr[0])

    def _to_waiting_room(self, conn: Conn) -> None:
        if self._stopping.is_set():
            return self._count_closed(conn, "shutdown")
        self._incoming.put(conn)
        self._wake()

    def _dispatch(self, conn: Conn) -> None:
        lane = self._work if self._is_transfer(bytes(conn.buf[:512])) else self._fast
        deferred = self._deferred[id(lane)]
        if deferred:  # first come, first served: nobody overtakes a request already waiting
            deferred.append((time.monotonic(), conn))
            return
        try:
            lane.put_nowait(conn)
        except queue.Full:
            deferred.append((time.monotonic(), conn))

    def _retry_deferred(self, now: float) -> None:
        for lane in (self._work, self._fast):
            deferred = self._deferred[id(lane)]
            while deferred:
                since, conn = deferred[0]
                if now - since > self.limits.queue_wait_s:
                    deferred.popleft()
                    try:
                        conn.sock.send(BUSY_RESPONSE)
                    except OSError:
                        pass
                    self._count_closed(conn, "busy")
                    continue
                try:
                    lane.put_nowait(conn)
                except queue.Full:
                    break
                deferred.popleft()

    def _deferred_count(self) -> int:
        return sum(len(d) for d in self._deferred.values())

    def _loop(self) -> None:
        last_sweep = 0.0
        while not self._stopping.is_set():
            for key, _ in self._sel.select(timeout=0.005 if self._deferred_count() else 0.5):
                if key.data is None:
                    self._drain_wakeups()
                else:
                    self._readable(key.data)
            self._take_incoming()
            now = time.monotonic()
            self._retry_deferred(now)
            if now - last_sweep >= 0.5:
                self._sweep(now)
                last_sweep = now
        for conn in list(self._waiting.values()):
            self._forget(conn)
            self._count_closed(conn, "shutdown")
        for deferred in self._deferred.values():
            while deferred:
                self._count_closed(deferred.popleft()[1], "shutdown")
        self._take_incoming()

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _take_incoming(self) -> None:
        while True:
            try:
                conn = self._incoming.get_nowait()
            except queue.Empty:
                return
            if self._stopping.is_set():
                self._count_closed(conn, "shutdown")
                continue
            self._admit(conn)
            if conn.has_head():  # a pipelined request already arrived with the previous one
                self._head_arrived(conn)

    def _admit(self, conn: Conn) -> None:
        while len(self._waiting) >= self.limits.max_connections:
            oldest = next(iter(self._waiting.values()))
            self._forget(oldest)
            self._count_closed(oldest, "evicted")
        try:
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)
        except (OSError, ValueError):
            return self._count_closed(conn, "reset")
        conn.since = time.monotonic()
        conn.head_started = time.monotonic() if conn.buf else 0.0
        self._waiting[conn.sock.fileno()] = conn

    def _forget(self, conn: Conn) -> None:
        if conn.need:
            self.body_readers -= 1
            conn.need = 0
        self._waiting.pop(conn.sock.fileno(), None)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._forget(conn)
            return self._count_closed(conn, "reset")
        if not data:
            self._forget(conn)
            return self._count_closed(conn, "client")
        if not conn.buf:
            conn.head_started = time.monotonic()
        conn.buf += data
        if conn.need:
            if len(conn.buf) >= conn.need:
                self._forget(conn)
                self._dispatch(conn)
        elif conn.has_head():
            self._head_arrived(conn)
        elif len(conn.buf) > self.limits.max_head_bytes:
            self._refuse(conn, TOO_LARGE_RESPONSE, "head_too_large")

    def _head_arrived(self, conn: Conn) -> None:
        """Frame the request strictly; hand it to a worker once its body (if any) is here, read in the waiting room."""
        try:
            framing = frame_request(conn.buf, self.limits.max_body_bytes)
        except FramingError as exc:
            return self._refuse(conn, error_response(exc.status, exc.reason), "bad_framing")
        need = framing.head_bytes + framing.body_bytes
        if len(conn.buf) >= need:
            self._forget(conn)
            return self._dispatch(conn)
        if self.body_readers >= self.limits.max_body_readers:
            return self._refuse(conn, BUSY_RESPONSE, "body_busy")
        conn.need, conn.body_since = need, time.monotonic()
        self.body_readers += 1

    def _sweep(self, now: float) -> None:
        lim = self.limits
        for conn in list(self._waiting.values()):
            if conn.need:
                if now - conn.body_since > lim.body_timeout_s:
                    self._refuse(conn, BODY_TIMEOUT_RESPONSE, "body_timeout")
                continue
            if conn.buf and now - conn.head_started > lim.header_timeout_s:
                reason = "header_timeout"
            elif not conn.buf and now - conn.since > lim.idle_timeout_s:
                reason = "idle_timeout"
            else:
                continue
            self._forget(conn)
            self._count_closed(conn, reason)

    def _worker(self, work: queue.Queue[Conn | None]) -> None:
        while True:
            conn = work.get()
            if conn is None:
                return
            with self._lock:
                self.busy += 1
            keep = False
            try:
                conn.sock.settimeout(self.limits.io_timeout_s)
                keep = self._handle(conn)
            except Exception as exc:  # a bug in a handler must not cost us the worker
                log.error("golden serve: %s: request failed: %s", conn.addr[0], exc)
                log.debug("golden serve: request failure", exc_info=True)
            finally:
                with self._lock:
                    self.busy -= 1
            if keep and not self._stopping.is_set():
                try:
                    conn.sock.setblocking(False)
                except OSError:
                    conn.close()
                    continue
                self._to_waiting_room(conn)
            else:
                conn.close()
