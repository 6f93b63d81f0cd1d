"""The golden agent as baked into images, run for real against a stub boot server on loopback."""

from __future__ import annotations

import datetime
import json
import os
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fixtures.common import ROOT, free_port
from toolkit.core.run import run

AGENT = ROOT / "roles" / "golden_agent" / "files" / "golden-agent"
REPORT_KEYS = {"mac", "build_id", "image", "token", "hostname", "booted_at", "uptime_s", "drift", "agent_version",
               "checks", "drift_kinds", "logins", "secure_boot"}
TOKEN = "n0nce.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@dataclass
class StubServer:
    """POST /report answers the scripted statuses in order (the last one repeats)."""

    statuses: list[int]
    requests: list[dict] = field(default_factory=list)
    url: str = ""
    rotate_tokens: bool = False

    def handle(self, handler: BaseHTTPRequestHandler) -> int:
        length = int(handler.headers.get("Content-Length", "0"))
        self.requests.append({
            "path": handler.path,
            "content_type": handler.headers.get("Content-Type"),
            "body": json.loads(handler.rfile.read(length)),
        })
        index = min(len(self.requests), len(self.statuses)) - 1
        return self.statuses[index]


@pytest.fixture
def stub() -> Iterator[StubServer]:
    state = StubServer(statuses=[200])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status = state.handle(self)
            body = b""
            if state.rotate_tokens and status == 200:
                body = json.dumps({"next_token": f"next-{len(state.requests)}"}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # the node's own service, for http health checks
            body = b"<h1>served by a golden image</h1>" if self.path == "/" else b"nope"
            self.send_response(200 if self.path == "/" else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/report"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def write_cmdline(tmp_path: Path, report_url: str | None, **extra: str) -> Path:
    words = ["BOOT_IMAGE=/vmlinuz", "boot=live", "golden.build=b-1234", "golden.image=base",
             "golden.mac=52:54:00:AB:CD:EF", f"golden.token={TOKEN}", "console=ttyS0,115200"]
    if report_url:
        words.append(f"golden.report={report_url}")
    words += [f"golden.{k}={v}" for k, v in extra.items()]
    path = tmp_path / "cmdline"
    path.write_text(" ".join(words) + "\n")
    return path


def run_agent(tmp_path: Path, *args: str, timeout: float = 60):
    console = tmp_path / "console"
    argv = [sys.executable, str(AGENT), "--config", str(tmp_path / "agent.json"), "--console", str(console), *args]
    result = run(argv, check=False, capture=True, timeout=timeout)
    text = console.read_text() if console.exists() else ""
    return result, text


def make_upper(tmp_path: Path) -> Path:
    upper = tmp_path / "upper"
    for rel, content in {
        "etc/ssh/sshd_config": "PasswordAuthentication yes\n",
        "usr/local/bin/implant": "#!/bin/sh\n",
        "var/log/syslog": "noise\n",
        "var/lib/systemd/random-seed": "x",
        "etc/machine-id": "0123\n",
        "etc/ssh/ssh_host_ed25519_key": "k",
        "tmp/scratch": "t",
    }.items():
        path = upper / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (upper / "opt" / "newdir").mkdir(parents=True)  # an empty new directory is drift too
    (upper / "etc" / "motd.link").symlink_to("/etc/issue")
    # An overlayfs whiteout (character device 0/0) records a deleted file.
    os.mknod(upper / "etc" / "issue.net", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    return upper


EXPECTED_DRIFT = ["/etc/issue.net", "/etc/motd.link", "/etc/ssh/sshd_config", "/opt/newdir", "/usr/local/bin/implant"]


def test_accepted_report_carries_the_contract(stub: StubServer, tmp_path: Path) -> None:
    cmdline = write_cmdline(tmp_path, stub.url)
    upper = make_upper(tmp_path)
    result, console = run_agent(tmp_path, "--cmdline", str(cmdline), "--upper", str(upper), "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(stub.requests) == 1
    request = stub.requests[0]
    assert request["path"] == "/report"
    assert request["content_type"] == "application/json"
    report = request["body"]
    assert set(report) == REPORT_KEYS
    assert report["build_id"] == "b-1234"
    assert report["image"] == "base"
    assert report["token"] == TOKEN
    assert report["mac"] == "52:54:00:ab:cd:ef"
    assert report["drift"] == EXPECTED_DRIFT
    assert isinstance(report["uptime_s"], float) and report["uptime_s"] > 0
    booted = datetime.datetime.fromisoformat(report["booted_at"])
    assert booted.tzinfo is not None and booted < datetime.datetime.now(datetime.UTC)
    assert "report accepted" in console and "b-1234" in console


def test_retries_with_backoff_until_accepted(stub: StubServer, tmp_path: Path) -> None:
    stub.statuses = [500, 502, 503, 201]
    cmdline = write_cmdline(tmp_path, stub.url)
    result, console = run_agent(tmp_path, "--cmdline", str(cmdline), "--upper", str(tmp_path / "none"), "--once",
                                "--backoff-initial", "0.05", "--backoff-max", "0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(stub.requests) == 4
    assert result.stdout.count("answered HTTP 5") == 3
    assert "report accepted" in console


def test_unreachable_server_is_retried_then_given_up(tmp_path: Path) -> None:
    # A port nobody listens on: connection refused on every attempt.
    cmdline = write_cmdline(tmp_path, f"http://127.0.0.1:{free_port()}/report")
    result, console = run_agent(tmp_path, "--cmdline", str(cmdline), "--once", "--backoff-initial", "0.05",
                                "--max-attempts", "3")
    assert result.returncode == 1
    assert result.stdout.count("cannot reach") == 3
    assert "no answer" in result.stdout
    assert console == ""


def test_403_stops_for_good(stub: StubServer, tmp_path: Path) -> None:
    stub.statuses = [403, 200]
    cmdline = write_cmdline(tmp_path, stub.url)
    # Periodic mode: a rejected agent must not re-report or retry.
    result, console = run_agent(tmp_path, "--cmdline", str(cmdline), "--interval", "0.05", "--backoff-initial", "0.05")
    assert result.returncode == 3
    assert len(stub.requests) == 1
    assert "REJECTED" in result.stdout and "REJECTED" in console


def test_re_reports_periodically_with_rotated_tokens(stub: StubServer, tmp_path: Path) -> None:
    stub.statuses = [200, 200, 200, 403]
    stub.rotate_tokens = True
    cmdline = write_cmdline(tmp_path, stub.url)
    result, console = run_agent(tmp_path, "--cmdline", str(cmdline), "--interval", "0.05")
    assert result.returncode == 3
    assert len(stub.requests) == 4
    assert console.count("report accepted") == 3
    # Tokens are single use: each later report spends the token the previous answer handed out.
    assert [r["body"]["token"] for r in stub.requests] == [TOKEN, "next-1", "next-2", "next-3"]


def test_health_checks_are_run_and_reported(stub: StubServer, tmp_path: Path) -> None:
    port = int(stub.url.split(":")[2].split("/")[0])
    checks = [
        {"name": "http-ok", "http": {"port": port, "path": "/", "expect_status": 200, "expect_body": "golden"}},
        {"name": "http-body", "http": {"port": port, "path": "/", "expect_body": "never-there"}},
        {"name": "http-down", "http": {"port": port, "path": "/down"}},
        {"name": "unit", "unit_active": "golden-no-such-unit.service"},
    ]
    (tmp_path / "agent.json").write_text(json.dumps({"checks": checks, "checks_settle_s": 0.5}))
    cmdline = write_cmdline(tmp_path, stub.url)
    result, _ = run_agent(tmp_path, "--cmdline", str(cmdline), "--upper", str(tmp_path / "none"), "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    reported = stub.requests[0]["body"]["checks"]
    assert reported["http-ok"]["passed"] is True
    assert reported["http-body"] == {"passed": False,
                                     "detail": f"GET http://127.0.0.1:{port}/: body lacks 'never-there'"}
    assert reported["http-down"]["passed"] is False and "HTTP 503" in reported["http-down"]["detail"]
    assert reported["unit"]["passed"] is False
    assert "check http-body: FAILED" in result.stdout


def test_drift_honours_a_configured_allowlist(tmp_path: Path) -> None:
    upper = make_upper(tmp_path)
    config = {"allowlist": ["/var/log", "/etc/ssh/*", "/opt"], "upper_dirs": [str(upper)]}
    (tmp_path / "agent.json").write_text(json.dumps(config))
    result, _ = run_agent(tmp_path, "--print-drift")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [
        "/etc/issue.net", "/etc/machine-id", "/etc/motd.link", "/tmp/scratch", "/usr/local/bin/implant",
        "/var/lib/systemd/random-seed",
    ]


JOURNAL = [  # journalctl --output=json lines as sshd and login write them (one is noise)
    {"__REALTIME_TIMESTAMP": "1764650000000000", "SYSLOG_IDENTIFIER": "sshd",
     "MESSAGE": "Accepted publickey for root from 10.0.2.2 port 51234 ssh2: ED25519-CERT SHA256:abc ID "
                "golden-breakglass:node1:alice (serial 7) CA ED25519 SHA256:def"},
    {"__REALTIME_TIMESTAMP": "1764650001000000", "SYSLOG_IDENTIFIER": "sshd",
     "MESSAGE": "Connection closed by 10.0.2.2 port 51234"},
    {"__REALTIME_TIMESTAMP": "1764650002000000", "SYSLOG_IDENTIFIER": "login",
     "MESSAGE": "ROOT LOGIN  on '/dev/ttyS0'"},
]


def test_drift_kinds_history_and_logins_are_reported(stub: StubServer, tmp_path: Path) -> None:
    upper = make_upper(tmp_path)
    (upper / "root").mkdir()
    (upper / "root" / ".bash_history").write_text("vi /etc/ssh/sshd_config\n")
    (upper / "home" / "alice").mkdir(parents=True)
    (upper / "home" / "alice" / ".profile").write_text("x")
    lower = tmp_path / "lower"  # the image as baked: sshd_config and issue.net exist there
    (lower / "etc" / "ssh").mkdir(parents=True)
    (lower / "etc" / "ssh" / "sshd_config").write_text("PasswordAuthentication no\n")
    (lower / "etc" / "issue.net").write_text("Debian\n")
    journal = tmp_path / "journal.json"
    journal.write_text("".join(json.dumps(e) + "\n" for e in JOURNAL))
    config = {"lower_dirs": [str(lower)], "journal_command": ["cat", str(journal)]}
    (tmp_path / "agent.json").write_text(json.dumps(config))
    cmdline = write_cmdline(tmp_path, stub.url)
    result, _ = run_agent(tmp_path, "--cmdline", str(cmdline), "--upper", str(upper), "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    report = stub.requests[0]["body"]
    # The built-in list no longer hides a root session's history or home folders.
    assert report["drift"] == sorted([*EXPECTED_DRIFT, "/root/.bash_history", "/home/alice/.profile"])
    assert report["drift_kinds"] == {
        "/etc/issue.net": "deleted", "/etc/ssh/sshd_config": "modified", "/etc/motd.link": "added",
        "/opt/newdir": "added", "/usr/local/bin/implant": "added", "/root/.bash_history": "added",
        "/home/alice/.profile": "added"}
    assert report["logins"] == [
        {"at": "2025-12-02T04:33:20+00:00", "line": JOURNAL[0]["MESSAGE"]},
        {"at": "2025-12-02T04:33:22+00:00", "line": JOURNAL[2]["MESSAGE"]},
    ]


def test_no_report_url_means_nothing_to_do(stub: StubServer, tmp_path: Path) -> None:
    cmdline = write_cmdline(tmp_path, None)
    result, _ = run_agent(tmp_path, "--cmdline", str(cmdline), "--once")
    assert result.returncode == 0
    assert "nothing to report to" in result.stdout
    assert stub.requests == []


def test_bad_configuration_exits_2(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text(json.dumps({"allowlsit": []}))
    result, _ = run_agent(tmp_path, "--once")
    assert result.returncode == 2
    assert "unknown keys ['allowlsit']" in result.stdout
