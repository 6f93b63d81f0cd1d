"""``golden serve``: the embedded boot server. One process, stdlib HTTP, no root needed.

Routes (everything else is 404):

- ``GET|HEAD /store/<image>/<build-id>/<artifact>`` and ``/a/<sha256>``: build artifacts, with
  single ``Range`` requests and exact ``Content-Length``, sent with sendfile(2). Paths are
  matched against strict patterns before anything touches the disk and the resolved file must
  lie inside the store, so traversal (plain or percent-encoded) can only ever produce 404.
- ``GET /boot/<mac>.ipxe``: the machine's iPXE script from desired state, with a fresh token.
  Unknown MACs get a script that exits to the next boot device and are recorded.
- ``POST /report``: the agent's report (contract 3): 200 when accepted, 403 when rejected,
  400 when the request itself is malformed; tokens and attempts are checked in ``evidence``.
- ``GET /install/<mac>.json?token=``: a disk host's install plan, for its live attempt only (``toolkit.boot.install``).
- ``POST /clean``: the cleaning image's per-disk report (``golden retire``; ``cleaning``), codes as for /report.
- ``GET /metrics``: Prometheus text (``toolkit.boot.metrics``).
- ``GET /fleet``: the fleet page, live (the same self-contained HTML as ``golden report``).

Connections (``toolkit.boot.connections``): idle and half-sent requests wait in one selector
thread and cost no worker; a fixed pool of workers handles complete requests, each with I/O
timeouts; when all are busy and the queue is full a request gets 503. A client that resets its
connection is one debug line, never a traceback. ``-v`` logs one access line per request on the
``golden.serve.access`` logger. On SIGTERM/Ctrl-C, ``serve_forever`` stops accepting, closes idle
connections and gives in-flight transfers ``Limits.drain_s`` seconds to finish.

When the state DB cannot be written, ``/boot`` still answers from what can be read (the
dropped write is counted in ``golden_state_write_failures_total`` and logged once).

A build whose signature does not verify against the trusted keys is no build to boot (its hosts get
the no-build script, ``toolkit.boot.decide``), and none of its files is served (``toolkit.boot.builds``).

The script's artifact URLs use the Host the machine asked for (or ``--public-url``), so the same
server works behind nginx, on a lab bridge, and from QEMU's slirp (10.0.2.2).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import socket
import socketserver
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from toolkit.boot import pxe
from toolkit.boot.admin import REALM, fleet_allowed
from toolkit.boot.builds import ArtifactIndex, BuildCache
from toolkit.boot.cleaning import accept_cleaning
from toolkit.boot.connections import Conn, ConnectionPool, Limits, SocketReader
from toolkit.boot.decide import decide_boot
from toolkit.boot.evidence import accept_refusal, accept_report, issue_boot_token, reject
from toolkit.boot.install import INSTALL_RE, answer_install, install_args
from toolkit.boot.metrics import Metrics
from toolkit.boot.netboot import REFUSED_PATH
from toolkit.boot.reports import MAX_REPORT_BYTES, RejectKind, ReportRejected, decode_report
from toolkit.boot.retention import Pruned, Pruner, RetentionPolicy
from toolkit.boot.token import DEFAULT_TTL_S
from toolkit.boot.values import parse_listen, parse_range, query_of, redact_tokens
from toolkit.core.config import StaleConfig
from toolkit.core.errors import InputError
from toolkit.core.secret import Secret
from toolkit.core.text import printable
from toolkit.fleet.fleet import Fleet
from toolkit.fleet.gauges import fleet_gauges
from toolkit.fleet.page import render_page
from toolkit.image.ref import BUILD_REF, IMAGE_NAME
from toolkit.state.db import StateError
from toolkit.store.artifacts import MANIFEST, Build, Store

log = logging.getLogger("golden.serve")
access_log = logging.getLogger("golden.serve.access")
# What a client hanging up mid-request raises; a debug line, never a traceback.
DISCONNECTS = (ConnectionError, TimeoutError, socket.timeout)

STORE_RE = re.compile(
    rf"^/store/({IMAGE_NAME})/({BUILD_REF})/(vmlinuz|initrd|rootfs\.squashfs|manifest\.json|uki\.efi|uki\.crt)$"
)
SHA_RE = re.compile(r"^/a/([0-9a-f]{64})$")
# iPXE percent-encodes the colons of ${mac} in a URL path: 52%3A54%3A00...
TEXT = "text/plain; charset=utf-8"
BOOT_RE = re.compile(r"^/boot/([0-9A-Fa-f]{2}(?:(?:[:-]|%3[Aa])?[0-9A-Fa-f]{2}){5})\.ipxe$")
HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


@dataclass
class ServerConfig:
    """Everything the boot server needs: the fleet, the store, the token secret and its limits."""
    fleet: Fleet
    store: Store
    secret: bytes
    public_url: str | None = None
    pxe_dir: Path = pxe.PXE_DIR
    extra_args: tuple[str, ...] = ()
    token_ttl_s: float = DEFAULT_TTL_S
    limits: Limits = field(default_factory=Limits)
    retention: RetentionPolicy | None = None  # None: no pruning thread (tests, embedding)
    page_policy: StaleConfig | None = None  # the staleness policy the /fleet page colours hosts by
    # when a nightly last succeeded (a /metrics gauge); the CLI reads the nightly records, a stage above boot
    nightly_last_success: Callable[[], float | None] = lambda: None
    fleet_token: Secret | None = None  # /fleet wants it; None: /fleet only on a loopback listen address


class BootHTTPServer(HTTPServer):
    """Accepts on the calling thread; every connection then lives in ``self.pool``."""

    allow_reuse_address = True
    request_queue_size = 1024  # the accept backlog: a burst of firmware waits in the kernel, not refused

    def __init__(self, address: tuple[str, int], config: ServerConfig) -> None:
        self.config = config
        self.index = ArtifactIndex(config.store)
        self.builds = BuildCache(config.store)
        self.store_root = config.store.root.resolve()
        self._state_down = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        # handlers are built by _handle_conn (one per request), never by socketserver
        super().__init__(address, BootHandler)  # type: ignore[arg-type]
        self.pool = ConnectionPool(config.limits, self._handle_conn, is_transfer)
        self.metrics = Metrics(self.pool.stats)

    # ---- connections ----
    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand a new connection to the pool (socketserver calls this on accept)."""
        self.pool.add(request, client_address)

    def _handle_conn(self, conn: Conn) -> bool:
        """One request on a worker thread; True to keep the connection for the next one."""
        try:
            handler = BootHandler(conn, self)
        except DISCONNECTS as exc:
            log.debug("golden serve: %s:%s: %s", conn.addr[0], conn.addr[1], exc.__class__.__name__)
            return False
        return not handler.close_connection

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print a traceback to stderr outside logging
        """Log a connection error at debug level (socketserver would print a traceback)."""
        log.debug("golden serve: %s: connection error", client_address, exc_info=True)

    def drain(self, seconds: float | None = None) -> bool:
        """Stop accepting, close idle connections, let in-flight requests finish for ``seconds``."""
        self.socket.close()
        wait = self.config.limits.drain_s if seconds is None else seconds
        finished = self.pool.drain(wait)
        if not finished:
            log.warning("golden serve: stopped with %d request(s) still in flight after %g s",
                        self.pool.busy, wait)
        return finished

    def start_pruner(self) -> Pruner | None:
        """Start the retention thread when the config has a policy; None otherwise."""
        policy = self.config.retention
        if policy is None:
            return None
        pruner = Pruner(self.config.fleet.db, policy, self._pruned)
        pruner.start()
        return pruner

    def _pruned(self, result: Pruned) -> None:
        for table, n in (("boot_tokens", result.spent_tokens + result.expired_tokens), ("boot_events", result.events),
                         ("unknown_machines", result.unknown_machines), ("boot_noise", result.noise)):
            if n:
                self.metrics.add("pruned", table, n)

    def server_close(self) -> None:
        """Close the listening socket and every pooled connection."""
        super().server_close()
        if hasattr(self, "pool"):  # HTTPServer closes a socket it could not bind before we made the pool
            self.pool.drain(0)

    def state_written(self, ok: bool) -> None:
        """Count a dropped state write; log the first of a series once, and the recovery."""
        if ok:
            if self._state_down:
                self._state_down = False
                log.warning("golden serve: the state database is writable again")
            return
        self.metrics.bump("state_write_failures")
        if not self._state_down:
            self._state_down = True
            log.error("golden serve: cannot write the state database %s; still serving boot scripts, "
                      "boot events and reports are dropped until it is writable", self.config.fleet.db.where)

    def find_build(self, image: str, build_id: str) -> Build | None:
        """The stored build, when this server may serve it (toolkit.boot.builds)."""
        return self.builds.find(image, build_id)

    @property
    def url(self) -> str:
        """The server's base URL (IPv6 addresses in brackets)."""
        host, port = self.server_address[:2]
        return f"http://[{host!s}]:{port}" if ":" in str(host) else f"http://{host!s}:{port}"


class BadForward(Exception):
    """A trusted proxy's X-Forwarded-For is empty or not one address: the request gets 400."""


class BootHandler(BaseHTTPRequestHandler):
    """Exactly one request of a connection (the pool owns the connection between requests)."""

    server: BootHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: iPXE and live-boot fetch several files in a row
    server_version = "golden"
    sys_version = ""

    def __init__(self, conn: Conn, server: BootHTTPServer) -> None:
        self._conn = conn
        self._t0 = time.monotonic()
        super().__init__(conn.sock, conn.addr, server)

    # ---- plumbing ----
    def setup(self) -> None:
        """Read and write through the pooled connection's socket and buffer, with the I/O deadline."""
        self.connection = self.request
        self.rfile = SocketReader(self.connection, self._conn.buf, self.server.config.limits.io_timeout_s)  # type: ignore[assignment]
        self.wfile = socketserver._SocketWriter(self.connection)  # type: ignore[attr-defined]

    def handle(self) -> None:
        """Serve exactly one request; the pool decides whether the connection is kept."""
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        """Nothing to flush: the connection goes back to the pool."""
        pass  # the socket goes back to the pool; nothing here is buffered

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's messages go to the debug log."""
        log.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No line here: the access line is written once the body is sent, with size and duration."""
        pass  # our access line is written once the body is sent (_count), with its size and duration

    def _client(self) -> str:
        """The client's address: a local proxy's (nginx's) X-Forwarded-For, else the peer. BadForward when the
        proxy's header is not exactly one IP address (nginx sets it to one: anything else is not nginx's)."""
        addr = self.client_address[0]
        fwd = self.headers.get_all("X-Forwarded-For")
        # Only a proxy on this machine (nginx) may tell us who the real client is.
        if fwd is None or addr not in ("127.0.0.1", "::1"):
            return addr
        value = fwd[0].strip() if len(fwd) == 1 else ""
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise BadForward(f"X-Forwarded-For must be one IP address, got {ascii(','.join(fwd))[:80]}") from None

    def _logged_client(self) -> str:
        try:
            return self._client()
        except BadForward:
            return self.client_address[0]

    def _count(self, route: str, code: int, sent: int) -> None:
        elapsed = time.monotonic() - self._t0
        metrics = self.server.metrics
        metrics.add("requests", (route, code))
        metrics.observe(route, elapsed)
        if sent:
            metrics.add("bytes", route, sent)
        if access_log.isEnabledFor(logging.INFO):
            line = printable(redact_tokens(self.requestline[:200]))
            access_log.info('%s "%s" %d %d %.1fms', self._logged_client(), line, code, sent, elapsed * 1000)

    def _send_body(self, route: str, code: int, body: bytes, ctype: str, head: bool = False,
                   extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self._count(route, code, 0 if head else len(body))

    def _not_found(self, route: str, head: bool = False) -> None:
        self._send_body(route, 404, b"not found\n", "text/plain; charset=utf-8", head)

    def _path(self) -> str:
        return urlsplit(self.path).path

    # ---- verbs ----
    def do_GET(self) -> None:
        """Serve an artifact, a boot script, /metrics, /fleet or /healthz."""
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        """As GET, without the body; boot scripts answer HEAD with 404 (a HEAD must not spend a token)."""
        self._dispatch(head=True)

    def _dispatch(self, head: bool) -> None:
        path = self._path()
        try:
            if m := STORE_RE.match(path):
                self._serve_store(m.group(1), m.group(2), m.group(3), head)
            elif m := SHA_RE.match(path):
                self._serve_sha(m.group(1), head)
            elif (m := BOOT_RE.match(path)) and not head:
                self._serve_boot(re.sub("%3[Aa]", ":", m.group(1)))
            elif path == REFUSED_PATH and not head:
                self._boot_refused()
            elif (m := INSTALL_RE.match(path)) and not head:
                answer = answer_install(self.server.config, self.server.metrics, m.group(1), query_of(self.path),
                                        self._client(), self._base_url())
                self._send_body("install", answer.code, answer.body, "application/json")
            elif path == "/metrics":
                cfg = self.server.config
                text = self.server.metrics.render(self.server.pool.closed_counts(),
                                                  fleet_gauges(cfg.fleet, cfg.nightly_last_success()))
                self._send_body("metrics", 200, text.encode(),
                                "text/plain; version=0.0.4; charset=utf-8", head)
            elif path == "/fleet" and not fleet_allowed(str(self.server.server_address[0]),
                                                        self.server.config.fleet_token,
                                                        self.headers.get("Authorization")):
                self._send_body("fleet", 401, b"the fleet page needs the token (golden serve --fleet-token-file)\n",
                                "text/plain; charset=utf-8", head, extra={"WWW-Authenticate": REALM})
            elif path == "/fleet":
                page = render_page(self.server.config.fleet.page(self.server.config.page_policy), live=True)
                self._send_body("fleet", 200, page.encode(), "text/html; charset=utf-8", head)
            elif path == "/healthz":
                self._send_body("healthz", 200, b"ok\n", "text/plain; charset=utf-8", head)
            else:
                self._not_found("other", head)
        except DISCONNECTS as exc:
            self._gone(exc)
        except BadForward as exc:
            self._bad_forward(exc, head)
        except Exception as exc:
            self._failed(exc)
            self._send_body("error", 500, b"internal error\n", "text/plain; charset=utf-8", head)

    def do_POST(self) -> None:
        """Take a report (/report); any other path is 404."""
        path = self._path()
        try:
            if path == "/report":
                self._report()
            elif path == "/clean":
                self._clean()
            else:
                self._not_found("other")
        except DISCONNECTS as exc:
            self._gone(exc)
        except BadForward as exc:
            self._bad_forward(exc)
        except Exception as exc:
            self._failed(exc)
            self._send_body("report", 500, b"internal error\n", "text/plain; charset=utf-8")

    def _bad_forward(self, exc: BadForward, head: bool = False) -> None:
        self.close_connection = True
        log.warning("golden serve: %s: %s", self.client_address[0], exc)
        self._send_body("bad-request", 400, f"{exc}\n".encode(), "text/plain; charset=utf-8", head)

    def _gone(self, exc: BaseException) -> None:
        self.close_connection = True
        log.debug("golden serve: %s: %s %s: client went away (%s)", self.client_address[0], self.command,
                  self._path(), exc.__class__.__name__)

    def _failed(self, exc: BaseException) -> None:
        log.error("golden serve: %s %s failed: %s: %s", self.command, self._path(), exc.__class__.__name__, exc)
        log.debug("golden serve: traceback", exc_info=True)

    # ---- artifacts ----
    def _serve_store(self, image: str, build_id: str, name: str, head: bool) -> None:
        build = self.server.find_build(image, build_id)
        if build is None or (name != MANIFEST and name not in build.manifest.artifacts):
            return self._not_found("artifact", head)
        self._serve_file(build.path / name, head)

    def _serve_sha(self, sha: str, head: bool) -> None:
        path = self.server.index.lookup(sha)
        if path is None:
            return self._not_found("artifact", head)
        self._serve_file(path, head)

    def _serve_file(self, path: Path, head: bool) -> None:
        route = "artifact"
        try:
            real = path.resolve(strict=True)
        except (FileNotFoundError, RuntimeError):
            return self._not_found(route, head)
        if not real.is_relative_to(self.server.store_root) or not real.is_file():
            log.warning("golden serve: refused %s: resolves outside the store", path)
            return self._not_found(route, head)
        try:
            f = open(real, "rb")
        except OSError:
            return self._not_found(route, head)
        try:
            size = os.fstat(f.fileno()).st_size
            start, length, code = 0, size, 200
            rng = self.headers.get("Range")
            if rng:
                parsed = parse_range(rng, size)
                if parsed is None:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self._count(route, 416, 0)
                    return
                if parsed[2]:
                    start, length, code = parsed[0], parsed[1], 206
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{start + length - 1}/{size}")
            self.end_headers()
            sent = 0
            if not head and length:
                self.wfile.flush()
                sent = self.connection.sendfile(f, start, length)
            self._count(route, code, sent)
        finally:
            f.close()

    # ---- boot scripts ----
    def _base_url(self) -> str:
        cfg = self.server.config
        if cfg.public_url:
            return cfg.public_url.rstrip("/")
        host = self.headers.get("Host", "")
        if not HOST_RE.match(host):
            host = f"{self.server.server_address[0]!s}:{self.server.server_address[1]}"
        return f"http://{host}"

    def _serve_boot(self, raw_mac: str) -> None:
        cfg = self.server.config
        client = self._client()
        ctype = "text/plain; charset=utf-8"
        try:
            decision = decide_boot(cfg.fleet, raw_mac, client)
        except StateError as exc:
            # Which build a host boots lives in the state database: without it there is no script we
            # can stand behind. A 503 fails iPXE's chain, and chain.ipxe falls through to the next boot
            # device (the node's disk), which is what a node should do while its boot server is degraded.
            self.server.metrics.add("scripts", "unavailable")
            log.error("golden serve: no boot script for %s: %s", raw_mac, exc)
            return self._send_body("boot", 503, b"state database unavailable\n", ctype, extra={"Retry-After": "30"})
        if decision.host is None:
            self.server.state_written(decision.recorded)
            self.server.pool.quiet.warn("unknown", "golden serve: unknown machine %s asked to boot (from %s)",
                                        decision.mac, client)
            self.server.metrics.add("scripts", "unknown")
            return self._send_body("boot", 200, pxe.unknown_script(cfg.pxe_dir).encode(), ctype)
        if decision.build is None:
            self.server.state_written(decision.recorded)
            log.warning("golden serve: %s (%s): %s", decision.host, decision.mac, decision.problem)
            self.server.metrics.add("scripts", "no-build")
            script = pxe.no_build_script(decision.host, decision.mac, decision.problem, cfg.pxe_dir)
            return self._send_body("boot", 200, script.encode(), ctype)
        base = self._base_url()
        issued = issue_boot_token(cfg.fleet, cfg.secret, decision.mac, decision.host, decision.build.build_id, client,
                                  decision.build.image)
        self.server.state_written(decision.recorded and issued.recorded)
        if issued.contested:
            self.server.metrics.bump("contested")
            log.warning("golden serve: %s (%s): boot script fetched again within reimage attempt %s (from %s): "
                        "attempt contested", decision.host, decision.mac, issued.attempt, client)
        script = pxe.machine_script(decision.build, decision.mac, issued.token, base, f"{base}/report",
                                    (*cfg.extra_args, *install_args(decision, issued, base)),
                                    secure_boot=decision.secure_boot)
        self.server.metrics.add("scripts", "build")
        log.info("golden serve: %s (%s) boots %s/%s", decision.host, decision.mac, decision.build.image,
                 decision.build.build_id)
        self._send_body("boot", 200, script.encode(), ctype)

    def _boot_refused(self) -> None:
        """Firmware evidence: this attempt's signed image was refused (Secure Boot). It can only fail the host."""
        query, cfg = query_of(self.path), self.server.config
        try:
            mac, attempt = accept_refusal(cfg.fleet, query, cfg.secret, self._client(), cfg.token_ttl_s)
        except ReportRejected as rej:
            self.server.metrics.add("rejects", rej.kind.value)
            return self._send_body("refused", 403, f"#!ipxe\necho golden: {rej.kind.value}\n".encode(), TEXT)
        log.warning("golden serve: %s: the firmware refused the signed image (attempt %s)", mac, attempt)
        self._send_body("refused", 200, b"#!ipxe\necho golden: boot refusal recorded\n", TEXT)

    # ---- reports ----
    def _reject(self, rej: ReportRejected, code: int = 403) -> None:
        if rej.kind == RejectKind.MALFORMED:
            code = 400  # the request itself is unusable; 403 is for reports we understood and refused
        self.server.metrics.add("reports", "rejected")
        self.server.metrics.add("rejects", rej.kind.value)
        body = json.dumps({"accepted": False, "reason": rej.reason, "kind": rej.kind.value}).encode()
        self._send_body("report", code, body, "application/json")

    def _report_payload(self) -> tuple[bool, Any]:
        """(True, the JSON body) of a report request; (False, None) when it was refused here (answered 400)."""
        fleet = self.server.config.fleet
        length_s = self.headers.get("Content-Length", "")
        if not length_s.isdigit() or len(length_s) > 7 or int(length_s) > MAX_REPORT_BYTES:
            self.close_connection = True
            rej = ReportRejected("malformed report: missing or oversized Content-Length", RejectKind.MALFORMED)
            reject(fleet, rej, self._client())
            self._reject(rej, 400)
            return False, None
        raw = self.rfile.read(int(length_s))
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if ctype != "application/json":
                raise ReportRejected("malformed report: Content-Type is not application/json", RejectKind.MALFORMED)
            payload = decode_report(raw)
        except ReportRejected as rej:
            reject(fleet, rej, self._client())
            self._reject(rej, 400)
            return False, None
        return True, payload

    def _unavailable(self, exc: StateError) -> None:
        self.server.state_written(False)
        body = json.dumps({"accepted": False, "reason": exc.message, "kind": "unavailable"}).encode()
        self._send_body("report", 503, body, "application/json", extra={"Retry-After": "30"})

    def _report(self) -> None:
        ok, payload = self._report_payload()
        if not ok:
            return
        fleet = self.server.config.fleet
        try:
            status, next_token = accept_report(fleet, payload, self.server.config.secret, self._client(),
                                               self.server.config.token_ttl_s)
        except ReportRejected as rej:
            return self._reject(rej)
        except StateError as exc:
            return self._unavailable(exc)
        self.server.metrics.add("reports", "accepted")
        log.info("golden serve: %s reported %s (%s)", status.name, status.observed or "-", status.state)
        body = json.dumps({"accepted": True, "host": status.name, "desired": status.desired,
                           "observed": status.observed, "state": status.state, "next_token": next_token}).encode()
        self._send_body("report", 200, body, "application/json")


    def _clean(self) -> None:
        """A cleaning report from the image golden retire netbooted: the host becomes clean or clean-failed."""
        ok, payload = self._report_payload()
        if not ok:
            return
        try:
            host, state = accept_cleaning(self.server.config.fleet, payload, self.server.config.secret,
                                          self._client(), self.server.config.token_ttl_s)
        except ReportRejected as rej:
            return self._reject(rej)
        except StateError as exc:
            return self._unavailable(exc)
        self.server.metrics.add("reports", "accepted")
        log.info("golden serve: %s cleaning report: %s", host, state)
        self._send_body("report", 200, json.dumps({"accepted": True, "host": host, "state": state}).encode(),
                        "application/json")


def is_transfer(head: bytes) -> bool:
    """Whether a request (its first bytes) fetches an artifact: those take the transfer lane of the pool."""
    _, _, rest = head.partition(b" ")
    return rest.startswith((b"/store/", b"/a/"))


def make_server(listen: str, config: ServerConfig) -> BootHTTPServer:
    """A boot server bound to ``listen`` (host:port); InputError naming what to change when it cannot bind."""
    host, port = parse_listen(listen)
    try:
        return BootHTTPServer((host, port), config)
    except OSError as exc:
        hint = {98: "another program listens there: pick a free port with --listen",
                13: "ports below 1024 need root or CAP_NET_BIND_SERVICE"}.get(exc.errno or 0,
                                                                               "check the address in --listen")
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint=hint) from None
