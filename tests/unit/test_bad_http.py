"""Hostile and careless HTTP requests to the boot server: each gets a clear status, none a traceback.

One row per case; grow the table with every bug. The server runs on 127.0.0.1 over real HTTP.
"""

from __future__ import annotations

import json
import logging
import socket

import pytest

from tests.unit.test_bootserver import MAC1, Env, env  # noqa: F401 - the fixture

JSON = {"Content-Type": "application/json"}


def _report(**over: object) -> bytes:
    payload = {"mac": MAC1, "build_id": "b2", "image": "base", "token": "0" * 32 + ".1.-." + "0" * 64,
               "hostname": "n", "booted_at": "2026-11-26T21:00:00Z", "uptime_s": 1.0, "drift": [],
               "agent_version": "1"}
    payload.update(over)
    return json.dumps(payload).encode()


def _disk(**over: object) -> dict[str, object]:
    return {"name": "vda", "kind": "virtio", "size_bytes": 1 << 30, "serial": "S", "model": "", "result": "erased",
            "method": "zeroout", "detail": "", "attempts": [], **over}


def _clean(**over: object) -> bytes:
    payload = {"mac": MAC1, "build_id": "b2", "image": "base", "token": "0" * 32 + ".1.-." + "0" * 64,
               "result": "clean", "disks": [_disk()], **over}
    return json.dumps(payload).encode()


CASES = [  # (what, method, path, body, headers, expected status)
    ("5,000-digit Range start", "GET", "/store/base/b2/vmlinuz", None, {"Range": "bytes=" + "9" * 5000 + "-"}, 200),
    ("5,000-digit Range end", "GET", "/store/base/b2/vmlinuz", None, {"Range": "bytes=0-" + "9" * 5000}, 200),
    ("Range past the end", "GET", "/store/base/b2/vmlinuz", None, {"Range": "bytes=999999-"}, 416),
    ("Range of garbage", "GET", "/store/base/b2/vmlinuz", None, {"Range": "lines=1-2"}, 200),
    ("report nested 30,000 deep", "POST", "/report", b"[" * 30_000 + b"]" * 30_000, JSON, 400),
    ("report with NaN", "POST", "/report", _report().replace(b'"uptime_s": 1.0', b'"uptime_s": NaN'), JSON, 400),
    ("report with Infinity", "POST", "/report", _report().replace(b'"uptime_s": 1.0', b'"uptime_s": -Infinity'),
     JSON, 400),
    ("report with 1e999", "POST", "/report", _report().replace(b'"uptime_s": 1.0', b'"uptime_s": 1e999'), JSON, 400),
    ("report with a 5,000-digit number", "POST", "/report",
     _report().replace(b'"uptime_s": 1.0', b'"uptime_s": ' + b"9" * 5000), JSON, 400),
    ("report not UTF-8", "POST", "/report", b'{"mac": "\xff\xfe"}', JSON, 400),
    ("report of 20,000 drift paths", "POST", "/report", _report(drift=["/x"] * 20_000), JSON, 413),
    ("report with a 10 KiB hostname", "POST", "/report", _report(hostname="h" * 10_240), JSON, 400),
    ("report with a bool uptime", "POST", "/report", _report(uptime_s=True), JSON, 400),
    ("report without Content-Type", "POST", "/report", _report(), {}, 400),
    ("report with a 12-digit Content-Length", "POST", "/report", b"{}",
     {**JSON, "Content-Length": "999999999999"}, 413),
    ("report with a negative Content-Length", "POST", "/report", b"{}", {**JSON, "Content-Length": "-1"}, 400),
    ("boot script for a non-MAC", "GET", "/boot/..%2f..%2fetc%2fpasswd.ipxe", None, {}, 404),
    ("boot script for a too-long MAC", "GET", "/boot/" + "ab:" * 40 + "ab.ipxe", None, {}, 404),
    ("garbage Host header", "GET", f"/boot/{MAC1}.ipxe", None, {"Host": "evil host/../$(x)"}, 200),
    ("unknown method", "PUT", "/report", None, {}, 501),
    ("unknown method with a body", "PUT", "/report", b"{}", JSON, 400),
    ("GET with a body", "GET", f"/boot/{MAC1}.ipxe", b"GET /healthz HTTP/1.1\r\n\r\n", {}, 400),
    ("Content-Length and Transfer-Encoding", "POST", "/report", b"{}",
     {**JSON, "Content-Length": "2", "Transfer-Encoding": "chunked"}, 400),
    ("Transfer-Encoding chunked", "POST", "/report", b"2\r\n{}\r\n0\r\n\r\n", {**JSON, "Transfer-Encoding": "chunked"},
     400),
    ("X-Forwarded-For of a comma from the local proxy", "GET", f"/boot/{MAC1}.ipxe", None, {"X-Forwarded-For": ","},
     400),
    ("empty X-Forwarded-For from the local proxy", "GET", f"/boot/{MAC1}.ipxe", None, {"X-Forwarded-For": ""}, 400),
    ("X-Forwarded-For of two addresses", "GET", f"/boot/{MAC1}.ipxe", None,
     {"X-Forwarded-For": "10.0.0.9, 10.0.0.8"}, 400),
    ("X-Forwarded-For that is no address", "GET", f"/boot/{MAC1}.ipxe", None, {"X-Forwarded-For": "evil"}, 400),
    ("X-Forwarded-For on a report", "POST", "/report", _report(), {**JSON, "X-Forwarded-For": "[::1]"}, 400),
    ("one X-Forwarded-For address", "GET", f"/boot/{MAC1}.ipxe", None, {"X-Forwarded-For": " 10.0.0.9 "}, 200),
    ("report with 300 logins", "POST", "/report", _report(logins=[{"at": "t", "line": "x"}] * 300), JSON, 400),
    ("report with a 2 KiB login line", "POST", "/report", _report(logins=[{"at": "t", "line": "x" * 2048}]), JSON, 400),
    ("report with a login that is no object", "POST", "/report", _report(logins=["Accepted password"]), JSON, 400),
    ("report with an unknown drift kind", "POST", "/report", _report(drift=["/x"], drift_kinds={"/x": "evil"}),
     JSON, 400),
    ("report with drift kinds as a list", "POST", "/report", _report(drift_kinds=["/x"]), JSON, 400),
    ("cleaning report not JSON", "POST", "/clean", b"erased!", JSON, 400),
    ("cleaning report without disks", "POST", "/clean", _clean(disks=None), JSON, 400),
    ("cleaning report with 100 disks", "POST", "/clean", _clean(disks=[_disk()] * 100), JSON, 400),
    ("cleaning report with an unknown method", "POST", "/clean", _clean(disks=[_disk(method="magic")]), JSON, 400),
    ("cleaning report with a bool exit status", "POST", "/clean",
     _clean(disks=[_disk(attempts=[{"method": "overwrite", "rc": False, "verified": True}])]), JSON, 400),
    ("cleaning report with a result of its own", "POST", "/clean", _clean(disks=[_disk(result="probably")]), JSON, 400),
    ("cleaning report with a negative size", "POST", "/clean", _clean(disks=[_disk(size_bytes=-1)]), JSON, 400),
    ("cleaning report of a forged token", "POST", "/clean", _clean(), JSON, 403),
    ("cleaning report without Content-Type", "POST", "/clean", _clean(), {}, 400),
    ("install plan for a non-MAC", "GET", "/install/evil.json", None, {}, 400),
    ("install plan for an encoded traversal", "GET", "/install/..%2f..%2fetc%2fpasswd.json", None, {}, 400),
    ("install plan with a path below it", "GET", f"/install/{MAC1}/x.json", None, {}, 404),
    ("install plan for a RAM host", "GET", f"/install/{MAC1}.json?token=x", None, {}, 403),
    ("install plan with disks that are no sizes", "GET", f"/install/{MAC1}.json?disks=vda:lots", None, {}, 400),
    ("install plan with 100 disks", "GET", f"/install/{MAC1}.json?disks=" + ",".join(["vda:1"] * 100), None, {},
     400),
    ("install plan by HEAD", "HEAD", f"/install/{MAC1}.json", None, {}, 404),
    ("install plan by POST", "POST", f"/install/{MAC1}.json", b"{}", JSON, 404),
    ("report naming slot c", "POST", "/report", _report(slot="c"), JSON, 400),
    ("report naming a slot by number", "POST", "/report", _report(slot=1), JSON, 400),
    ("fleet page with a query", "GET", "/fleet?<script>", None, {}, 200),
    ("fleet page by HEAD", "HEAD", "/fleet", None, {}, 200),
    ("fleet page with a trailing slash", "GET", "/fleet/", None, {}, 404),
]


@pytest.mark.parametrize("what, method, path, body, headers, status", CASES, ids=[c[0] for c in CASES])
def test_hostile_request_gets_a_clear_status(env: Env, caplog: pytest.LogCaptureFixture, what: str,  # noqa: F811
                                             method: str, path: str, body: bytes | None,
                                             headers: dict[str, str], status: int) -> None:
    caplog.set_level(logging.DEBUG, logger="golden")
    code, _, reply = env.request(method, path, body, headers)
    assert code == status, what
    assert b"$(x)" not in reply and b"evil host" not in reply  # a bad Host never reaches a boot script
    assert not [r for r in caplog.records if r.exc_info], what  # no traceback in the server's log
    ok, _, _ = env.request("GET", "/healthz")
    assert ok == 200  # and the server still answers


RAW_CASES = [  # (what, bytes sent on one connection, the one status line expected)
    ("conflicting Content-Length", b"POST /report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    ("smuggled request after CL+TE", b"POST /report HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    ("Content-Length that is no number", b"POST /report HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n",
     b"400"),
    ("body of a GET run as a request", b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 38\r\n\r\n"
     b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
]


@pytest.mark.parametrize("what, raw, status", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_ambiguous_framing_is_one_400_and_nothing_more(env: Env, what: str, raw: bytes,  # noqa: F811
                                                        status: bytes) -> None:
    with socket.create_connection(env.server.server_address[:2], timeout=5) as s:
        s.sendall(raw)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 " + status + b" "), what
    assert reply.count(b"HTTP/1.1 ") == 1, what  # the connection is closed: no bytes of it run as a second request
