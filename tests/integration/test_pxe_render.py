"""`golden pxe render` output checked by the real daemons: nginx -t, dnsmasq --test, and nginx
serving the store and proxying to a running `golden serve`, all on loopback."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.boot import GOLDEN, ServeProcess, golden_env, make_build, start_golden_serve, write_inventory
from tests.fixtures.common import free_port
from toolkit.core.run import kill_group, require, run, spawn
from toolkit.state.db import SQLiteStateDB
from toolkit.store.artifacts import Store

pytestmark = pytest.mark.integration

MAC = "52:54:00:aa:00:01"



def _render(out: Path, home: Path, *args: str) -> dict:
    res = run([GOLDEN, "--json", "--home", str(home), "pxe", "render", "--out", str(out), *args],
              capture=True, env=golden_env())
    return json.loads(res.stdout)


def test_render_files(tmp_path: Path):
    out = tmp_path / "pxe"
    result = _render(out, tmp_path / "home", "--server-url", "http://10.1.2.3", "--interface", "eth7",
                     "--subnet", "10.1.2.0")
    assert set(result["files"]) >= {"nginx-site.conf", "nginx.conf", "dnsmasq-proxydhcp.conf", "tftp/golden.ipxe",
                                    "tftp/undionly.kpxe", "tftp/snponly.efi", "tftp/ipxe.efi"}
    assert result["missing"] == []
    dns = (out / "dnsmasq-proxydhcp.conf").read_text()
    assert "dhcp-range=10.1.2.0,proxy" in dns and "interface=eth7" in dns and "port=0" in dns
    assert "undionly.kpxe" in dns and "snponly.efi" in dns
    chain = (out / "tftp/golden.ipxe").read_text()
    assert "chain --autofree http://10.1.2.3/boot/${mac}.ipxe" in chain
    assert (out / "tftp/undionly.kpxe").read_bytes() == Path("/usr/lib/ipxe/undionly.kpxe").read_bytes()
    assert not list(out.rglob(".*.tmp"))


def test_render_bad_input_exits_2(tmp_path: Path):
    res = run([GOLDEN, "--home", str(tmp_path), "pxe", "render", "--out", str(tmp_path / "o"), "--server-url",
               "ftp://x", "--interface", "eth0", "--subnet", "10.0.0.0"], capture=True, check=False,
              env=golden_env())
    assert res.returncode == 2 and "--server-url" in res.stderr and "Traceback" not in res.stderr
    res = run([GOLDEN, "--home", str(tmp_path), "pxe", "render", "--out", str(tmp_path / "o"), "--server-url",
               "http://10.0.0.1", "--interface", "nosuchif0"], capture=True, check=False,
              env=golden_env())
    assert res.returncode == 2 and "nosuchif0" in res.stderr


def test_subnet_read_from_interface(tmp_path: Path):
    out = tmp_path / "pxe"
    _render(out, tmp_path / "home", "--server-url", "http://127.0.0.1", "--interface", "lo")
    assert "dhcp-range=127.0.0.0,proxy" in (out / "dnsmasq-proxydhcp.conf").read_text()


def test_dnsmasq_accepts_config(tmp_path: Path):
    require("dnsmasq", "dnsmasq-base")
    out = tmp_path / "pxe"
    _render(out, tmp_path / "home", "--server-url", "http://10.1.2.3", "--interface", "lo", "--subnet", "127.0.0.0")
    res = run(["dnsmasq", "--test", f"--conf-file={out / 'dnsmasq-proxydhcp.conf'}"], capture=True, check=False)
    assert res.returncode == 0, res.stderr
    assert "syntax check OK" in res.stderr + res.stdout


def test_dnsmasq_rejects_broken_config(tmp_path: Path):
    """The syntax check above can fail: a mangled option is refused by the same command."""
    out = tmp_path / "pxe"
    _render(out, tmp_path / "home", "--server-url", "http://10.1.2.3", "--interface", "lo", "--subnet", "127.0.0.0")
    conf = out / "dnsmasq-proxydhcp.conf"
    conf.write_text(conf.read_text().replace("dhcp-range=", "dhcp-rnge="))
    res = run(["dnsmasq", "--test", f"--conf-file={conf}"], capture=True, check=False)
    assert res.returncode != 0


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, ServeProcess, Store, Path]]:
    """golden serve on loopback, nginx in front of it from the rendered config."""
    require("nginx", "nginx-light")
    home = tmp_path / "home"
    store = Store(home / "store")
    make_build(store, "base", "b1", sizes={"vmlinuz": 4096, "initrd": 2048, "rootfs.squashfs": 1_000_000})
    run([GOLDEN, "--home", str(home), "publish", "base", "b1", "--channel", "dev"], capture=True,
        env=golden_env())
    inv = write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, "base@dev")})
    serve = start_golden_serve(home, inv, tmp_path / "serve.log")
    upstream = serve.url.removeprefix("http://")
    port = free_port()
    out = tmp_path / "pxe"
    _render(out, home, "--server-url", f"http://127.0.0.1:{port}", "--interface", "lo", "--subnet", "127.0.0.0",
            "--listen", f"127.0.0.1:{port}", "--upstream", upstream, "--nginx-user", "root")
    test = run(["nginx", "-t", "-c", str(out / "nginx.conf")], capture=True, check=False)
    assert test.returncode == 0, test.stderr
    nginx = spawn(["nginx", "-c", str(out / "nginx.conf"), "-g", "daemon off;"])
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert nginx.poll() is None, (out / "run" / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}", serve, store, out
    finally:
        kill_group(nginx)
        serve.stop()


def _get(hostport: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = hostport.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_nginx_serves_store_and_proxies_golden_serve(site):
    hostport, _serve, store, out = site
    build = store.get("base", "b1")
    data = (build.path / "rootfs.squashfs").read_bytes()
    code, headers, body = _get(hostport, "GET", "/store/base/b1/rootfs.squashfs")
    assert code == 200 and body == data and headers["content-length"] == str(len(data))
    code, headers, body = _get(hostport, "GET", "/store/base/b1/rootfs.squashfs", headers={"Range": "bytes=100-199"})
    assert code == 206 and body == data[100:200] and headers["content-range"] == f"bytes 100-199/{len(data)}"
    for bad in ("/store/base/b1/../../state.db", "/store/base/b1/%2e%2e/%2e%2e/boot-secret",
                "/store/base/b1/logs/bake.log", "/store/base/.staging/x", "/etc/passwd", "/store/",
                "/store/base/b1/..%2f..%2fboot-secret"):
        code, _, body = _get(hostport, "GET", bad)
        assert code == 404, (bad, code)  # nginx maps every path outside the store layout to 404
        assert b"secret-ish" not in body
    # Dynamic endpoints go through nginx to golden serve; the script points back at nginx. The boot is
    # a reimage attempt's, so its report is verified evidence (one outside any attempt would not be).
    with SQLiteStateDB(store.root.parent / "state.db").write() as repo:
        repo.arm_attempt("node1", "ab" * 8, "b1", time.time(), time.time() + 600)
    code, _, body = _get(hostport, "GET", f"/boot/{MAC}.ipxe")
    assert code == 200, body
    script = body.decode()
    assert f"http://{hostport}/store/base/b1/vmlinuz" in script
    token = next(w for w in script.split() if w.startswith("golden.token=")).split("=", 1)[1]
    report = {"mac": MAC, "build_id": "b1", "image": "base", "token": token, "hostname": "node1",
              "booted_at": "2026-11-26T21:00:00+00:00", "uptime_s": 3, "drift": [], "agent_version": "t"}
    code, _, body = _get(hostport, "POST", "/report", json.dumps(report).encode(),
                         {"Content-Type": "application/json"})
    assert code == 200 and json.loads(body)["state"] == "in-sync"
    replay = {**report, "drift": ["/etc/motd"]}  # the spent token with another report (the same one is answered again)
    code, _, body = _get(hostport, "POST", "/report", json.dumps(replay).encode(),
                         {"Content-Type": "application/json"})
    assert code == 403 and json.loads(body)["kind"] == "replay"
    code, _, body = _get(hostport, "GET", "/metrics")
    assert code == 200 and b'golden_reports_total{result="accepted"} 1' in body
    # A firmware refusal reaches golden serve through nginx (here refused: its token is spent).
    code, _, body = _get(hostport, "GET", f"/boot-refused?mac={MAC}&build=b1&image=base&token={token}&errno=0x1")
    assert code == 403 and body.startswith(b"#!ipxe"), body
    code, _, body = _get(hostport, "GET", "/boot/52:54:00:ff:ff:ff.ipxe")
    assert code == 200 and b"exit" in body
    # nginx served the artifacts itself: golden serve counted no artifact requests.
    assert b'route="artifact"' not in body
    _, _, metrics = _get(hostport, "GET", "/metrics")
    assert b'route="artifact"' not in metrics
    # The proxied client address reached golden serve.
    unknown = run([GOLDEN, "--json", "--home", str(store.root.parent), "fleet", "--unknown", "-i",
                   str(out.parent / "inventory.yml")], capture=True, env=golden_env())
    assert json.loads(unknown.stdout)[0]["remote_addr"] == "127.0.0.1"
