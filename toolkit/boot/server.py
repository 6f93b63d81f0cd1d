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
- ``GET /metrics``: Prometheus text.

When the state DB cannot be written, ``/boot`` still answers from what can be read (the
dropped write is counted in ``golden_state_write_failures_total`` and logged once).

The script's artifact URLs use the Host the machine asked for (or ``--public-url``), so the same
server works behind nginx, on a lab bridge, and from QEMU's slirp (10.0.2.2).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from toolkit.boot import pxe
from toolkit.boot.decide import decide_boot
from toolkit.boot.evidence import accept_report, issue_boot_token, reject
from toolkit.boot.reports import MAX_REPORT_BYTES, RejectKind, ReportRejected, decode_report
from toolkit.boot.token import DEFAULT_TTL_S
from toolkit.core.errors import GoldenError, InputError
from toolkit.fleet.fleet import Fleet
from toolkit.state.db import StateError
from toolkit.store.artifacts import MANIFEST, Build, Store

log = logging.getLogger("golden.serve")

STORE_RE = re.compile(
    r"^/store/([a-z][a-z0-9_-]{0,62})/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/(vmlinuz|initrd|rootfs\.squashfs|manifest\.json)$"
)
SHA_RE = re.compile(r"^/a/([0-9a-f]{64})$")
# iPXE percent-encodes the colons of ${mac} in a URL path: 52%3A54%3A00...
BOOT_RE = re.compile(r"^/boot/([0-9A-Fa-f]{2}(?:(?:[:-]|%3[Aa])?[0-9A-Fa-f]{2}){5})\.ipxe$")
HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
RANGE_RE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")  # 18 digits: any real offset, never a huge int


class Metrics:
    """Counters, rendered in Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.bytes: Counter[str] = Counter()
        self.scripts: Counter[str] = Counter()
        self.reports: Counter[str] = Counter()
        self.rejects: Counter[str] = Counter()
        self.state_write_failures = 0
        self.contested = 0

    def add(self, counter: str, key: Any, n: int = 1) -> None:
        with self._lock:
            getattr(self, counter)[key] += n

    def bump(self, name: str) -> int:
        with self._lock:
            value = int(getattr(self, name)) + 1
            setattr(self, name, value)
            return value

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP golden_http_requests_total HTTP requests served, by route and status code.",
                "# TYPE golden_http_requests_total counter",
            ]
            lines += [f'golden_http_requests_total{{route="{r}",code="{c}"}} {n}'
                      for (r, c), n in sorted(self.requests.items())]
            lines += ["# HELP golden_http_response_bytes_total Response body bytes sent, by route.",
                      "# TYPE golden_http_response_bytes_total counter"]
            lines += [f'golden_http_response_bytes_total{{route="{r}"}} {n}' for r, n in sorted(self.bytes.items())]
            lines += ["# HELP golden_boot_scripts_total iPXE scripts served, by kind (build, unknown, no-build).",
                      "# TYPE golden_boot_scripts_total counter"]
            lines += [f'golden_boot_scripts_total{{kind="{k}"}} {n}' for k, n in sorted(self.scripts.items())]
            lines += ["# HELP golden_reports_total Agent reports received, by result.",
                      "# TYPE golden_reports_total counter"]
            for result in ("accepted", "rejected"):
                lines.append(f'golden_reports_total{{result="{result}"}} {self.reports[result]}')
            lines += ["# HELP golden_report_rejects_total Agent reports rejected, by reason.",
                      "# TYPE golden_report_rejects_total counter"]
            lines += [f'golden_report_rejects_total{{reason="{k}"}} {n}' for k, n in sorted(self.rejects.items())]
            lines += ["# HELP golden_boot_attempts_contested_total Reimage attempts whose boot script was fetched "
                      "twice (nobody's report counts).",
                      "# TYPE golden_boot_attempts_contested_total counter",
                      f"golden_boot_attempts_contested_total {self.contested}",
                      "# HELP golden_state_write_failures_total State DB writes dropped while serving "
                      "(full or read-only database).",
                      "# TYPE golden_state_write_failures_total counter",
                      f"golden_state_write_failures_total {self.state_write_failures}"]
        return "\n".join(lines) + "\n"


class ArtifactIndex:
    """sha256 -> file, from every build's manifest; rescanned on a miss, at most every few seconds."""

    RESCAN_SECONDS = 2.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._by_sha: dict[str, Path] = {}
        self._scanned_at = 0.0

    def lookup(self, sha: str) -> Path | None:
        path = self._by_sha.get(sha)
        if path is not None and path.is_file():
            return path
        with self._lock:
            if time.monotonic() - self._scanned_at >= self.RESCAN_SECONDS:
                self._scan()
        path = self._by_sha.get(sha)
        return path if path is not None and path.is_file() else None

    def _scan(self) -> None:
        found: dict[str, Path] = {}
        for image in self.store.images():
            try:
                builds = self.store.builds(image)
            except GoldenError as exc:
                log.warning("golden serve: skipping image %s: %s", image, exc)
                continue
            for b in builds:
                for name, art in b.manifest.artifacts.items():
                    found.setdefault(art.sha256, b.path / name)
        self._by_sha = found
        self._scanned_at = time.monotonic()


@dataclass
class ServerConfig:
    fleet: Fleet
    store: Store
    secret: bytes
    public_url: str | None = None
    pxe_dir: Path = pxe.PXE_DIR
    extra_args: tuple[str, ...] = ()
    token_ttl_s: float = DEFAULT_TTL_S


class BootHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.index = ArtifactIndex(config.store)
        self.store_root = config.store.root.resolve()
        self._builds: dict[tuple[str, str], Build] = {}
        self._builds_lock = threading.Lock()
        self._state_down = False
        super().__init__(address, BootHandler)

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
        key = (image, build_id)
        build = self._builds.get(key)
        if build is not None and build.path.is_dir():
            return build
        try:
            build = self.config.store.find(image, build_id)
        except GoldenError:
            build = None
        with self._builds_lock:
            if build is None:
                self._builds.pop(key, None)
            else:
                self._builds[key] = build
        return build

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class BootHandler(BaseHTTPRequestHandler):
    server: BootHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: iPXE and live-boot fetch several files in a row
    # Headers and body leave in separate writes; with Nagle on, a keep-alive client waits for the
    # delayed ACK (40 ms) on every small response.
    disable_nagle_algorithm = True
    server_version = "golden"
    sys_version = ""

    # ---- plumbing ----
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _client(self) -> str:
        addr = self.client_address[0]
        fwd = self.headers.get("X-Forwarded-For")
        # Only a proxy on this machine (nginx) may tell us who the real client is.
        if fwd and addr in ("127.0.0.1", "::1"):
            return fwd.split(",")[0].strip()[:64]
        return addr

    def _count(self, route: str, code: int, sent: int) -> None:
        self.server.metrics.add("requests", (route, code))
        if sent:
            self.server.metrics.add("bytes", route, sent)

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
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
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
            elif path == "/metrics":
                self._send_body("metrics", 200, self.server.metrics.render().encode(),
                                "text/plain; version=0.0.4; charset=utf-8", head)
            elif path == "/healthz":
                self._send_body("healthz", 200, b"ok\n", "text/plain; charset=utf-8", head)
            else:
                self._not_found("other", head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("golden serve: %s %s failed", self.command, path)
            self._send_body("error", 500, b"internal error\n", "text/plain; charset=utf-8", head)

    def do_POST(self) -> None:
        path = self._path()
        try:
            if path == "/report":
                self._report()
            else:
                self._not_found("other")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("golden serve: POST %s failed", path)
            self._send_body("report", 500, b"internal error\n", "text/plain; charset=utf-8")

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
            log.warning("golden serve: unknown machine %s asked to boot (from %s)", decision.mac, client)
            self.server.metrics.add("scripts", "unknown")
            return self._send_body("boot", 200, pxe.unknown_script(cfg.pxe_dir).encode(), ctype)
        if decision.build is None:
            self.server.state_written(decision.recorded)
            log.warning("golden serve: %s (%s): %s", decision.host, decision.mac, decision.problem)
            self.server.metrics.add("scripts", "no-build")
            script = pxe.no_build_script(decision.host, decision.mac, decision.problem, cfg.pxe_dir)
            return self._send_body("boot", 200, script.encode(), ctype)
        base = self._base_url()
        issued = issue_boot_token(cfg.fleet, cfg.secret, decision.mac, decision.host, decision.build.build_id, client)
        self.server.state_written(decision.recorded and issued.recorded)
        if issued.contested:
            self.server.metrics.bump("contested")
            log.warning("golden serve: %s (%s): boot script fetched again within reimage attempt %s (from %s): "
                        "attempt contested", decision.host, decision.mac, issued.attempt, client)
        script = pxe.machine_script(decision.build, decision.mac, issued.token, base, f"{base}/report",
                                    cfg.extra_args)
        self.server.metrics.add("scripts", "build")
        log.info("golden serve: %s (%s) boots %s/%s", decision.host, decision.mac, decision.build.image,
                 decision.build.build_id)
        self._send_body("boot", 200, script.encode(), ctype)

    # ---- reports ----
    def _reject(self, rej: ReportRejected, code: int = 403) -> None:
        if rej.kind == RejectKind.MALFORMED:
            code = 400  # the request itself is unusable; 403 is for reports we understood and refused
        self.server.metrics.add("reports", "rejected")
        self.server.metrics.add("rejects", rej.kind.value)
        body = json.dumps({"accepted": False, "reason": rej.reason, "kind": rej.kind.value}).encode()
        self._send_body("report", code, body, "application/json")

    def _report(self) -> None:
        fleet = self.server.config.fleet
        length_s = self.headers.get("Content-Length", "")
        if not length_s.isdigit() or len(length_s) > 7 or int(length_s) > MAX_REPORT_BYTES:
            self.close_connection = True
            rej = ReportRejected("malformed report: missing or oversized Content-Length", RejectKind.MALFORMED)
            reject(fleet, rej)
            return self._reject(rej, 400)
        raw = self.rfile.read(int(length_s))
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if ctype != "application/json":
                raise ReportRejected("malformed report: Content-Type is not application/json", RejectKind.MALFORMED)
            payload = decode_report(raw)
        except ReportRejected as rej:
            reject(fleet, rej)
            return self._reject(rej, 400)
        try:
            status, next_token = accept_report(fleet, payload, self.server.config.secret, self._client(),
                                               self.server.config.token_ttl_s)
        except ReportRejected as rej:
            return self._reject(rej)
        except StateError as exc:
            self.server.state_written(False)
            body = json.dumps({"accepted": False, "reason": exc.message, "kind": "unavailable"}).encode()
            return self._send_body("report", 503, body, "application/json", extra={"Retry-After": "30"})
        self.server.metrics.add("reports", "accepted")
        body = json.dumps({"accepted": True, "host": status.name, "desired": status.desired,
                           "observed": status.observed, "state": status.state, "next_token": next_token}).encode()
        self._send_body("report", 200, body, "application/json")


def parse_range(header: str, size: int) -> tuple[int, int, bool] | None:
    """A ``Range`` header as (start, length, partial); None when unsatisfiable (416).

    Multiple ranges and headers we do not understand are answered with the whole file, which
    RFC 9110 allows and which is what a boot client expects anyway.
    """
    m = RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return (0, size, False)
    if not m.group(1):  # suffix: the last N bytes
        n = min(int(m.group(2)), size)
        return (size - n, n, True) if n > 0 else None
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if m.group(2) and end < start:
        return (0, size, False)  # syntactically invalid: ignore the header
    if start >= size:
        return None
    end = min(end, size - 1)
    return (start, end - start + 1, True)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"--listen must be ADDR:PORT (e.g. 127.0.0.1:9090), got {value!r}")
    return (host.strip("[]") or "0.0.0.0", int(port))  # noqa: S104 - an explicit ":PORT" means all addresses


def make_server(listen: str, config: ServerConfig) -> BootHTTPServer:
    host, port = parse_listen(listen)
    try:
        return BootHTTPServer((host, port), config)
    except OSError as exc:
        hint = ("pick a free port with --listen" if exc.errno == 98
                else "ports below 1024 need root or CAP_NET_BIND_SERVICE")
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}", hint=hint) from None


def serve_forever(server: BootHTTPServer) -> None:
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


def start_in_thread(server: BootHTTPServer) -> threading.Thread:
    """For tests and embedding: serve on a daemon thread; stop with server.shutdown()."""
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    return t


