"""The boot server over real HTTP on 127.0.0.1 with a small fake store and inventory."""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build
from tests.fixtures.promtext import prom_samples
from toolkit.boot.running import start_in_thread
from toolkit.boot.server import BootHTTPServer, ServerConfig, make_server, parse_range
from toolkit.boot.token import issue_token, verify_token
from toolkit.fleet.fleet import Fleet
from toolkit.fleet.states import HostState
from toolkit.nightly.record import last_success_at
from toolkit.state.db import StateDB
from toolkit.state.postgres import PostgresStateDB
from toolkit.store import channels
from toolkit.store.artifacts import Build, Store

SECRET = b"s" * 64
MAC1 = "52:54:00:00:00:01"
MAC2 = "52:54:00:00:00:02"
MAC3 = "52:54:00:00:00:03"
STRANGER = "52:54:00:99:99:99"

INVENTORY = """\
all:
  children:
    rack1:
      hosts:
        node1:
          mac: "{mac1}"
          bmc_address: 127.0.0.1
          bmc_port: 16231
          bmc_protocol: ipmi
          bmc_user: admin
          bmc_password: hunter2
          image: "{image1}"
    rack2:
      hosts:
        node2:
          mac: "{mac2}"
          bmc_address: 127.0.0.1
          bmc_port: 16232
          bmc_user: admin
          bmc_password: hunter2
          image: base@b1
        node3:
          mac: "{mac3}"
          bmc_address: 127.0.0.1
          bmc_port: 16233
          bmc_user: admin
          bmc_password: hunter2
          image: base@prod
"""


@dataclass
class Env:
    server: BootHTTPServer
    fleet: Fleet
    store: Store
    db: StateDB
    inventory: Path
    b1: Build
    b2: Build

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        host, port = self.server.server_address[:2]
        conn = http.client.HTTPConnection(str(host), port, timeout=10)
        try:
            # http.client sends the path exactly as given: no normalization of '..' or '%2e'.
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def armed_token(self, host: str = "node1", mac: str = MAC1, build: str = "b2", attempt: str = "a" * 16) -> str:
        """The token of a boot script fetched within a live reimage attempt (its report is verified evidence)."""
        self.fleet.arm_attempts([(host, attempt, build)], 600)
        return _cmdline(self.request("GET", f"/boot/{mac}.ipxe")[2].decode())["golden.token"]

    def set_image(self, image1: str) -> None:
        text = INVENTORY.format(mac1=MAC1, mac2=MAC2, mac3=MAC3, image1=image1)
        tmp = self.inventory.with_suffix(".tmp")
        tmp.write_text(text)
        st = self.inventory.stat() if self.inventory.exists() else None
        tmp.replace(self.inventory)
        if st is not None:  # make sure the change is visible even within one mtime tick
            os.utime(self.inventory, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def start_env(tmp_path: Path, db: StateDB) -> Env:
    store = Store(tmp_path / "home" / "store")
    b1 = make_build(store, "base", "b1", age_rank=1)
    b2 = make_build(store, "base", "b2", age_rank=2)
    channels.publish(db, store, "base", "b2", "dev", user="test")
    inv = tmp_path / "inventory.yml"
    e = Env(None, None, store, db, inv, b1, b2)  # type: ignore[arg-type]
    e.set_image("base@dev")
    e.fleet = Fleet(db, store, inv)
    e.server = make_server("127.0.0.1:0", ServerConfig(fleet=e.fleet, store=store, secret=SECRET))
    start_in_thread(e.server)
    return e


def stop_env(e: Env) -> None:
    e.server.shutdown()
    e.server.server_close()


@pytest.fixture
def env(tmp_path: Path, state_db: StateDB) -> Iterator[Env]:
    e = start_env(tmp_path, state_db)
    yield e
    stop_env(e)


@pytest.mark.integration
def test_postgres_down_boot_script_is_503_then_recovers(tmp_path: Path, pg_cluster, caplog):
    """No script while the state database is unreachable (iPXE falls through to the disk); back when it is."""
    name = pg_cluster.create()
    e = start_env(tmp_path, PostgresStateDB(pg_cluster.url(name)))
    try:
        assert e.request("GET", f"/boot/{MAC1}.ipxe")[0] == 200
        with pg_cluster.admin() as conn:
            conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        code, headers, body = e.request("GET", f"/boot/{MAC1}.ipxe")
        assert (code, headers.get("retry-after"), body) == (503, "30", b"state database unavailable\n")
        assert "cannot reach the state database" in caplog.text and "Traceback" not in caplog.text
        with pg_cluster.admin() as conn:
            conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        deadline = time.monotonic() + 30
        while (code := e.request("GET", f"/boot/{MAC1}.ipxe")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert code == 200
    finally:
        stop_env(e)
        e.db.close()
        pg_cluster.drop(name)


# ---- artifacts ----

def test_artifact_whole_and_head(env: Env):
    data = (env.b2.path / "rootfs.squashfs").read_bytes()
    code, headers, body = env.request("GET", "/store/base/b2/rootfs.squashfs")
    assert code == 200 and body == data
    assert headers["content-length"] == str(len(data))
    assert headers["accept-ranges"] == "bytes"
    code, headers, body = env.request("HEAD", "/store/base/b2/rootfs.squashfs")
    assert code == 200 and body == b"" and headers["content-length"] == str(len(data))


def test_artifact_by_content_address(env: Env):
    art = env.b1.manifest.artifacts["vmlinuz"]
    code, headers, body = env.request("GET", f"/a/{art.sha256}")
    assert code == 200 and body == (env.b1.path / "vmlinuz").read_bytes()
    assert headers["content-length"] == str(art.size)
    assert env.request("GET", "/a/" + "0" * 64)[0] == 404


@pytest.mark.parametrize("rng, start, end", [("bytes=10-19", 10, 19), ("bytes=9990-", 9990, 9999),
                                             ("bytes=-7", 9993, 9999), ("bytes=9995-20000", 9995, 9999),
                                             ("bytes=0-", 0, 9999)])
def test_artifact_range(env: Env, rng: str, start: int, end: int):
    data = (env.b2.path / "rootfs.squashfs").read_bytes()
    assert len(data) == 10_000
    code, headers, body = env.request("GET", "/store/base/b2/rootfs.squashfs", headers={"Range": rng})
    assert code == 206
    assert body == data[start:end + 1]
    assert headers["content-length"] == str(end - start + 1)
    assert headers["content-range"] == f"bytes {start}-{end}/10000"


def test_artifact_range_unsatisfiable(env: Env):
    code, headers, body = env.request("GET", "/store/base/b2/rootfs.squashfs", headers={"Range": "bytes=10000-"})
    assert code == 416 and headers["content-range"] == "bytes */10000" and body == b""


def test_parse_range_pure():
    assert parse_range("bytes=0-0", 5) == (0, 1, True)
    assert parse_range("bytes=1-2,4-5", 5) == (0, 5, False)  # multi-range: whole file
    assert parse_range("items=1-2", 5) == (0, 5, False)
    assert parse_range("bytes=3-1", 5) == (0, 5, False)
    assert parse_range("bytes=-0", 5) is None
    assert parse_range("bytes=5-", 5) is None


TRAVERSALS = [
    "/a/../../etc/passwd",
    "/a/..%2f..%2fetc%2fpasswd",
    "/a/%2e%2e/%2e%2e/etc/passwd",
    "/store/../../etc/passwd",
    "/store/base/b2/../../../../etc/passwd",
    "/store/base/b2/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/store/base/b2/..%2f..%2f..%2fstate.db",
    "/store/base/%2e%2e/%2e%2e/state.db",
    "/store/base/b2/logs/bake.log",
    "/store/base/b2/",
    "/store/base/",
    "/store/base/.staging/rootfs.squashfs",
    "/store/base/b2/rootfs.squashfs/..",
    "/store/base/b2/rootfs.squashfs%00.txt",
    "//etc/passwd",
    "/etc/passwd",
    "/boot-secret",
    "/state.db",
    "/store/base/nope/vmlinuz",
    "/store/nope/b2/vmlinuz",
    "/a/" + "A" * 64,
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_and_unknown_ids_are_404(env: Env, path: str):
    code, _, body = env.request("GET", path)
    assert code == 404, path
    assert b"root:" not in body and b"secret-ish" not in body


def test_symlink_out_of_store_is_404(env: Env, tmp_path: Path):
    outside = tmp_path / "outside.txt"
    outside.write_text("outside the store\n")
    target = env.b1.path / "initrd"
    target.unlink()
    target.symlink_to(outside)
    code, _, body = env.request("GET", "/store/base/b1/initrd")
    assert code == 404 and b"outside" not in body


# ---- boot scripts ----

def _cmdline(script: str) -> dict[str, str]:
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    return dict(w.split("=", 1) for w in kernel.split()[2:] if "=" in w)


def test_boot_script_for_known_host(env: Env):
    code, _headers, body = env.request("GET", f"/boot/{MAC1}.ipxe", headers={"Host": "10.0.2.2:8080"})
    assert code == 200
    script = body.decode()
    assert script.startswith("#!ipxe")
    args = _cmdline(script)
    assert args["golden.build"] == "b2" and args["golden.image"] == "base"
    assert args["golden.sha256"] == env.b2.manifest.artifacts["rootfs.squashfs"].sha256
    assert args["fetch"] == "http://10.0.2.2:8080/store/base/b2/rootfs.squashfs"
    assert args["golden.report"] == "http://10.0.2.2:8080/report"
    assert "kernel http://10.0.2.2:8080/store/base/b2/vmlinuz" in script
    assert verify_token(SECRET, args["golden.token"], MAC1, "b2", image="base")
    again = _cmdline(env.request("GET", f"/boot/{MAC1.replace(':', '-').upper()}.ipxe")[2].decode())
    assert again["golden.token"] != args["golden.token"]  # fresh per boot
    # iPXE percent-encodes the colons of ${mac}
    encoded = _cmdline(env.request("GET", f"/boot/{MAC1.replace(':', '%3A')}.ipxe")[2].decode())
    assert encoded["golden.build"] == "b2"
    with env.db.read() as repo:
        row = repo.get_host("node1")
    assert row is not None and row.served_build == "b2" and row.observed_build is None


def test_pinned_build_and_empty_channel(env: Env):
    pinned = _cmdline(env.request("GET", f"/boot/{MAC2}.ipxe")[2].decode())
    assert pinned["golden.build"] == "b1"
    code, _, body = env.request("GET", f"/boot/{MAC3}.ipxe")
    assert code == 200
    assert "exit" in body.decode() and "kernel" not in body.decode()
    assert "base@prod" in body.decode()


def test_unknown_machine_gets_exit_and_is_recorded(env: Env):
    code, _, body = env.request("GET", f"/boot/{STRANGER}.ipxe")
    assert code == 200
    text = body.decode()
    assert text.startswith("#!ipxe") and re.search(r"^exit$", text, re.M) and "kernel" not in text
    env.request("GET", f"/boot/{STRANGER}.ipxe")
    [seen] = env.fleet.unknown_machines()
    assert seen.mac == STRANGER and seen.seen_count == 2 and seen.remote_addr == "127.0.0.1"


def test_bad_mac_path_is_404(env: Env):
    assert env.request("GET", "/boot/../../etc/passwd.ipxe")[0] == 404
    assert env.request("GET", "/boot/52:54:00:00:00.ipxe")[0] == 404


def test_reassignment_and_channel_moves_apply_on_next_boot(env: Env):
    assert _cmdline(env.request("GET", f"/boot/{MAC1}.ipxe")[2].decode())["golden.build"] == "b2"
    channels.publish(env.db, env.store, "base", "b1", "staging", user="t")
    env.set_image("base@staging")
    assert _cmdline(env.request("GET", f"/boot/{MAC1}.ipxe")[2].decode())["golden.build"] == "b1"
    channels.publish(env.db, env.store, "base", "b2", "staging", user="t")
    assert _cmdline(env.request("GET", f"/boot/{MAC1}.ipxe")[2].decode())["golden.build"] == "b2"


# ---- reports ----

def _report(env: Env, token: str, build: str = "b2", mac: str = MAC1, **over) -> tuple[int, dict]:
    payload = {"mac": mac, "build_id": build, "image": "base", "token": token, "hostname": "node1",
               "booted_at": "2026-11-26T21:00:00Z", "uptime_s": 12.5, "drift": ["/etc/motd"],
               "agent_version": "1.0"}
    payload.update(over)
    code, _, body = env.request("POST", "/report", json.dumps(payload).encode(),
                                {"Content-Type": "application/json"})
    return code, json.loads(body)


def _host_row(env: Env):
    with env.db.read() as repo:
        return repo.get_host("node1")


def test_good_report_updates_observed(env: Env):
    token = env.armed_token()
    code, body = _report(env, token)
    assert code == 200 and body["accepted"] and body["state"] == "drifted"
    row = _host_row(env)
    assert row.observed_build == "b2" and row.booted_at == "2026-11-26T21:00:00Z"
    assert row.drift == ("/etc/motd",) and row.last_report_at is not None
    with env.db.read() as repo:
        [event] = repo.events_after(0, ["report"])
    assert event.host == "node1" and event.build_id == "b2" and json.loads(event.detail)["checks"] == {}
    [status] = env.fleet.status("node1")
    assert status.desired == status.observed == "b2" and status.rack == "rack1"


def test_accepted_report_hands_out_a_fresh_single_use_token(env: Env):
    token = env.armed_token()
    code, body = _report(env, token)
    assert code == 200
    nxt = body["next_token"]
    assert nxt != token and verify_token(SECRET, nxt, MAC1, "b2", image="base")
    assert _report(env, nxt, drift=[])[0] == 200  # the periodic re-report spends the new token
    assert _report(env, nxt)[0] == 403  # and it cannot be spent twice
    assert _report(env, token)[0] == 403  # nor can the boot token


def test_a_report_resent_after_its_answer_was_lost_gets_that_answer_again(env: Env, monkeypatch):
    """A replica killed between recording a report and replying: the agent resends the same report with the
    same token. It is answered again (same next token, nothing recorded twice) for the same body and
    address while that next token is unspent and within the grace; anything else stays a replay."""
    token = env.armed_token()
    code, first = _report(env, token, drift=["/etc/a"])
    assert code == 200
    with env.db.read() as repo:
        events = len(repo.events_after(0, ["report"]))
    code, again = _report(env, token, drift=["/etc/a"])  # the very same report
    assert (code, again["next_token"], again["state"]) == (200, first["next_token"], first["state"])
    with env.db.read() as repo:
        assert len(repo.events_after(0, ["report"])) == events  # answered, not recorded again
    assert _report(env, token, drift=["/etc/b"])[1]["kind"] == "replay"  # another body: a replay
    monkeypatch.setattr("toolkit.boot.evidence.REANSWER_GRACE_S", 0.0)
    time.sleep(0.01)
    assert _report(env, token, drift=["/etc/a"])[1]["kind"] == "replay"  # past the grace
    monkeypatch.undo()
    assert _report(env, first["next_token"], drift=[])[0] == 200  # the agent moves on
    assert _report(env, token, drift=["/etc/a"])[1]["kind"] == "replay"  # its answer spent: a replay


def test_forged_replayed_malformed_reports_rejected_and_change_nothing(env: Env):
    token = env.armed_token()
    assert _report(env, token, drift=[])[0] == 200
    env.fleet.disarm_attempts([("node1", "a" * 16)])
    before = _host_row(env)
    nonce = token.split(".")[0]
    issued = [_cmdline(env.request("GET", f"/boot/{MAC1}.ipxe")[2].decode())["golden.token"] for _ in range(4)]
    forged = [  # (what, call, HTTP status, reject kind)
        ("replay", lambda: _report(env, token, drift=["/evil"]), 403, "replay"),
        ("other build", lambda: _report(env, issued[0], build="b1"), 403, "forged"),
        ("other mac", lambda: _report(env, issued[0], mac=MAC2), 403, "forged"),
        ("wrong secret", lambda: _report(env, issue_token(b"t" * 64, MAC1, "b2", image="base")), 403, "forged"),
        ("other image", lambda: _report(env, issued[0], image="evil"), 403, "forged"),
        ("made-up sig", lambda: _report(env, f"{nonce[:-1]}0.{token.split('.')[1]}.-.{'0' * 64}"), 403, "forged"),
        ("never issued", lambda: _report(env, issue_token(SECRET, MAC1, "b2", image="base")), 403, "unknown-token"),
        ("expired", lambda: _report(env, issue_token(SECRET, MAC1, "b2", issued_at=1_000_000, image="base")), 403,
         "expired"),
        ("no token", lambda: _report(env, ""), 400, "malformed"),
        ("bad booted_at", lambda: _report(env, issued[1], booted_at="yesterday"), 400, "malformed"),
        ("drift not list", lambda: _report(env, issued[2], drift="/etc"), 400, "malformed"),
        ("checks not map", lambda: _report(env, issued[3], checks={"x": True}), 400, "malformed"),
        ("stranger", lambda: _report(env, issue_token(SECRET, STRANGER, "b2", image="base"), mac=STRANGER), 403,
         "unknown-host"),
    ]
    for what, call, status, kind in forged:
        code, body = call()
        assert (code, body["accepted"], body["kind"]) == (status, False, kind), what
    raw = [
        (b"{not json", {"Content-Type": "application/json"}),
        (b'["a list"]', {"Content-Type": "application/json"}),
        (json.dumps({"mac": MAC1}).encode(), {"Content-Type": "text/plain"}),
    ]
    for data, headers in raw:
        assert env.request("POST", "/report", data, headers)[0] == 400  # the request itself is malformed
    # nothing observed changed (fetching the scripts above moved only served_at)
    assert dataclasses.replace(_host_row(env), served_at=None) == dataclasses.replace(before, served_at=None)
    with env.db.read() as repo:  # refusals are counted per kind and client address, not a row each
        rejects = {n.kind: n for n in repo.list_noise()}
    assert sum(n.count for n in rejects.values()) == len(forged) + len(raw)
    assert rejects["reject:replay"].key == "127.0.0.1" and rejects["reject:forged"].count == 5


def test_metrics(env: Env):
    env.request("GET", "/store/base/b2/vmlinuz")
    env.request("GET", "/a/../etc/passwd")
    env.request("GET", f"/boot/{STRANGER}.ipxe")
    token = _cmdline(env.request("GET", f"/boot/{MAC1}.ipxe")[2].decode())["golden.token"]
    _report(env, token)
    _report(env, token, drift=[])  # the spent token with another report: a replay (the same one is answered again)
    code, headers, body = env.request("GET", "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    metrics = prom_samples(text)
    assert metrics['golden_http_requests_total{code="200",route="artifact"}'] == 1
    assert metrics['golden_http_requests_total{code="404",route="other"}'] == 1
    assert metrics['golden_http_response_bytes_total{route="artifact"}'] == 3000
    assert metrics['golden_boot_scripts_total{kind="unknown"}'] == 1
    assert metrics['golden_boot_scripts_total{kind="build"}'] == 1
    assert metrics['golden_reports_total{result="accepted"}'] == 1
    assert metrics['golden_reports_total{result="rejected"}'] == 1
    assert metrics['golden_report_rejects_total{reason="replay"}'] == 1


def test_report_with_check_results_feeds_the_event(env: Env):
    token = env.armed_token()
    checks = {"agent-active": {"passed": True, "detail": "active"}, "http": {"passed": False, "detail": "503"}}
    assert _report(env, token, checks=checks)[0] == 200
    with env.db.read() as repo:
        [event] = repo.events_after(0, ["report"])
    assert json.loads(event.detail)["checks"] == checks


def test_fleet_shows_the_rollout_image_of_a_host_without_an_inventory_image(env: Env):
    text = INVENTORY.format(mac1=MAC1, mac2=MAC2, mac3=MAC3, image1="x").replace('          image: "x"\n', "")
    env.inventory.write_text(text)
    os.utime(env.inventory, ns=(0, env.inventory.stat().st_mtime_ns + 2_000_000_000))
    [before] = env.fleet.status("node1")
    assert before.image == "" and before.desired is None  # nothing says what node1 should run
    env.fleet.set_desired("node1", "base", "b1")  # what a reimage with --image does
    [after] = env.fleet.status("node1")
    assert after.image == "base" and after.desired == "b1"


def test_metrics_parse_with_prometheus_client_and_carry_the_fleet(env: Env, tmp_path: Path):
    """prometheus-client's own parser reads /metrics: process metrics, the request counters and the
    fleet's gauges (hosts by state and by image and channel, build age per channel, last good nightly)."""
    from prometheus_client.parser import text_string_to_metric_families

    runs = tmp_path / "runs"
    for run_id, status in (("20261201T020000Z-nightly-0a0b0c", "succeeded"), ("20261202T020000Z-nightly-0d0e0f",
                                                                               "failed")):
        (runs / run_id).mkdir(parents=True)
        (runs / run_id / "status").write_text(status + "\n")
    env.server.config.nightly_last_success = lambda: last_success_at(runs)
    token = env.armed_token()  # a report of a live reimage attempt: verified evidence, so the host is in-sync
    assert _report(env, token, drift=[])[0] == 200
    families = {f.name: f for f in text_string_to_metric_families(env.request("GET", "/metrics")[2].decode())}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "golden_http_requests",
            "golden_http_request_duration_seconds", "golden_reports"} <= set(families)

    def samples(name: str) -> dict[tuple[str, ...], float]:
        return {tuple(v for k, v in sorted(s.labels.items())): s.value for s in families[name].samples}

    by_state = samples("golden_fleet_hosts")
    statuses = {h.name: h.state for h in env.fleet.status()}
    assert by_state[("in-sync",)] == 1 == list(statuses.values()).count("in-sync")
    assert sum(by_state.values()) == len(statuses) and len(by_state) == len(HostState)
    by_image = samples("golden_fleet_hosts_by_image")
    assert by_image[("dev", "base")] == sum(1 for h in env.fleet.status() if h.image == "base@dev")
    age = samples("golden_channel_build_age_seconds")[("dev", "base")]
    baked = datetime.fromisoformat(env.b2.manifest.created_at.replace("Z", "+00:00")).timestamp()
    assert abs(age - (time.time() - baked)) < 60
    last = samples("golden_nightly_last_success_timestamp_seconds")[()]
    assert last == datetime(2026, 12, 1, 2, 0, tzinfo=UTC).timestamp()  # the newer run failed


@pytest.mark.parametrize("listen, token, header, allowed", [
    ("127.0.0.1", None, None, True),  # an admin (loopback) listen address and no token: open
    ("::1", None, None, True),
    ("0.0.0.0", None, None, False),  # reachable by the racks and no token: never
    ("10.0.0.5", None, "Bearer anything", False),
    ("127.0.0.1", "t0k", None, False),  # a token, once set, is always wanted
    ("10.0.0.5", "t0k", "Bearer t0k", True),
    ("10.0.0.5", "t0k", "Bearer t0kx", False),
    ("10.0.0.5", "t0k", "Basic YWRtaW46dDBr", True),  # admin:t0k
    ("10.0.0.5", "t0k", "Basic !!!", False),
    ("10.0.0.5", "t0k", "Digest t0k", False),
])
def test_fleet_page_access_table(listen, token, header, allowed):
    from toolkit.boot.admin import fleet_allowed
    from toolkit.core.secret import Secret

    assert fleet_allowed(listen, Secret(token) if token else None, header) is allowed
