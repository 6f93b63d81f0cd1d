"""A disk host's install plan over real HTTP on 127.0.0.1 (SQLite and PostgreSQL): who gets ``golden.install=``,
who gets the plan, what the plan says, and how a slot's report moves ``host_slots``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.fixtures.boot import make_build
from tests.fixtures.common import ROOT, load_script
from tests.unit.test_bootserver import SECRET, Env, _cmdline, _report
from toolkit.boot.running import start_in_thread
from toolkit.boot.server import ServerConfig, make_server
from toolkit.boot.token import issue_token
from toolkit.boot.values import redact_tokens
from toolkit.cli.fleet import _state
from toolkit.fleet.fleet import Fleet
from toolkit.fleet.page import COLOURS, FleetPage, render_page
from toolkit.fleet.slots import row_of, state_of
from toolkit.fleet.states import HostState
from toolkit.fleet.status import HostStatus, slot_summary
from toolkit.install.slots import Slot, reported
from toolkit.state.db import StateDB
from toolkit.state.slots import SlotRow
from toolkit.store import channels
from toolkit.store.artifacts import Store

DISK_MAC = "52:54:00:00:00:11"
RAM_MAC = "52:54:00:00:00:12"
ATTEMPT = "c" * 16
GIB = 1 << 30
DISKS = f"vda:{20 * GIB}"
BMC = "bmc_address: 127.0.0.1\n      bmc_user: admin\n      bmc_password: hunter2"
INVENTORY = f"""\
all:
  hosts:
    disk1:
      mac: "{DISK_MAC}"
      {BMC}
      bmc_port: 16241
      image: base@dev
      uefi: true
      install: disk
      disk_esp_size: 64M
      disk_slot_size: 1G
      disk_boot_tries: 2
    ram1:
      mac: "{RAM_MAC}"
      {BMC}
      bmc_port: 16242
      image: base@dev
"""
INSTALLER = load_script(ROOT / "roles" / "installer" / "files" / "golden-install", "golden_install_for_plans")


@pytest.fixture
def env(tmp_path: Path, state_db: StateDB) -> Iterator[Env]:
    store = Store(tmp_path / "home" / "store")
    b1, b2 = make_build(store, "base", "b1", age_rank=1), make_build(store, "base", "b2", age_rank=2)
    channels.publish(state_db, store, "base", "b2", "dev", user="test")
    inv = tmp_path / "inventory.yml"
    inv.write_text(INVENTORY)
    fleet = Fleet(state_db, store, inv)
    server = make_server("127.0.0.1:0", ServerConfig(fleet=fleet, store=store, secret=SECRET))
    start_in_thread(server)
    yield Env(server, fleet, store, state_db, inv, b1, b2)
    server.shutdown()
    server.server_close()


def _boot(env: Env, mac: str = DISK_MAC, host: str = "disk1", arm: bool = True) -> dict[str, str]:
    if arm:
        env.fleet.arm_attempts([(host, ATTEMPT, "b2")], 600)
    return _cmdline(env.request("GET", f"/boot/{mac}.ipxe", headers={"Host": "10.0.2.2:8080"})[2].decode())


def _plan(env: Env, token: str, mac: str = DISK_MAC, disks: str = DISKS) -> tuple[int, dict]:
    code, _, body = env.request("GET", f"/install/{mac}.json?token={quote(token)}&disks={disks}")
    return code, json.loads(body)


def _slots(env: Env, host: str = "disk1") -> SlotRow | None:
    with env.db.read() as repo:
        return repo.get_slots(host)


def _rejects(env: Env) -> dict[str, int]:
    return dict(env.server.metrics.rejects)


# ---- golden.install= on the boot script ----

@pytest.mark.parametrize(("mac", "host", "arm", "installs"), [
    (DISK_MAC, "disk1", True, True),  # a disk host within a live attempt
    (DISK_MAC, "disk1", False, False),  # a disk host booting outside any reimage: RAM, as before
    (RAM_MAC, "ram1", True, False),  # a RAM host within an attempt
], ids=["disk-in-attempt", "disk-no-attempt", "ram-in-attempt"])
def test_only_a_disk_host_within_a_live_attempt_is_told_to_install(env: Env, mac: str, host: str, arm: bool,
                                                                   installs: bool) -> None:
    args = _boot(env, mac, host, arm)
    assert args.get("golden.install") == (f"http://10.0.2.2:8080/install/{mac}.json" if installs else None)
    assert args["golden.build"] == "b2"


def test_a_contested_attempt_is_not_told_to_install(env: Env) -> None:
    _boot(env)
    second = _cmdline(env.request("GET", f"/boot/{DISK_MAC}.ipxe")[2].decode())
    assert "golden.install" not in second


# ---- the plan ----

def test_the_live_attempt_gets_the_plan_for_slot_a_and_it_is_recorded(env: Env) -> None:
    args = _boot(env)
    code, plan = _plan(env, args["golden.token"])
    assert code == 200, plan
    INSTALLER.load_plan(json.dumps(plan))  # the node's installer takes it as it is
    assert (plan["slot"], plan["device"], plan["build"]) == ("a", "/dev/vda", "b2")
    assert plan["sha256"] == env.b2.manifest.artifacts["rootfs.squashfs"].sha256
    assert plan["entry_name"] == "golden-a-b2+2.conf"  # disk_boot_tries: 2
    options = next(line for line in plan["entry_text"].splitlines() if line.startswith("options "))
    words = dict(w.partition("=")[::2] for w in options.split()[1:])
    assert words["golden.slot"] == "a" and words["golden.token"] == args["golden.token"]
    report = f"http://127.0.0.1:{env.server.server_address[1]}/report"
    assert words["golden.build"] == "b2" and words["golden.report"] == report
    assert not {"golden.install", "fetch", "boot"} & set(words)  # the slot never installs again nor downloads
    assert 'size=1024MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="golden-b"' in plan["sfdisk"]
    assert _slots(env) == SlotRow("disk1", None, "b2", None, "a", None, _slots(env).at)  # type: ignore[union-attr]
    with env.db.read() as repo:
        [event] = repo.events_after(0, ["install-plan"])
    assert event.host == "disk1" and json.loads(event.detail) == {"attempt": ATTEMPT, "slot": "a",
                                                                   "device": "/dev/vda"}


def test_a_host_running_slot_a_gets_slot_b_and_its_disks_from_its_facts(env: Env) -> None:
    with env.db.write() as repo:
        repo.set_slots(SlotRow("disk1", "a", "b1", None, None, None, 1.0))
        repo.add_hardware("disk1", "d", {"disks": [{"name": "sda", "size_bytes": 8 * GIB}]}, 1.0, "b1", [])
    code, plan = _plan(env, _boot(env)["golden.token"], disks="")
    assert code == 200, plan
    assert (plan["slot"], plan["device"], plan["entry_name"]) == ("b", "/dev/sda", "golden-b-b2+2.conf")
    row = _slots(env)
    assert row is not None and (row.active, row.slot_a, row.slot_b, row.trying) == ("a", "b1", "b2", "b")


def test_a_disk_too_small_is_409_with_the_reason_and_records_nothing(env: Env) -> None:
    code, body = _plan(env, _boot(env)["golden.token"], disks=f"vda:{GIB}")
    assert code == 409 and "disk vda holds 1G, the layout needs at least" in body["reason"]
    assert "disk_slot_size" in body["hint"]
    assert _slots(env) is None


def _spent(env: Env) -> str:
    token = _boot(env)["golden.token"]
    assert _report(env, token, mac=DISK_MAC)[0] == 200
    return token


def _other_host(env: Env) -> str:
    return _boot(env, RAM_MAC, "ram1")["golden.token"]


def _contested(env: Env) -> str:
    token = _boot(env)["golden.token"]
    env.request("GET", f"/boot/{DISK_MAC}.ipxe")
    return token


def _ended(env: Env) -> str:
    token = _boot(env)["golden.token"]
    env.fleet.disarm_attempts([("disk1", ATTEMPT)])
    return token


def _forged(env: Env) -> str:
    return issue_token(b"x" * 64, DISK_MAC, "b2", image="base", attempt=ATTEMPT)


# (id, how the token is made, the MAC asked for, status, reject kind)
REFUSED = [
    ("no-attempt", lambda e: _boot(e, arm=False)["golden.token"], DISK_MAC, 403, "ended"),
    ("contested", _contested, DISK_MAC, 403, "contested"),
    ("attempt-ended", _ended, DISK_MAC, 403, "ended"),
    ("spent-by-a-report", _spent, DISK_MAC, 403, "replay"),
    ("forged", _forged, DISK_MAC, 403, "forged"),
    ("another-hosts-token", _other_host, DISK_MAC, 403, "forged"),
    ("ram-host", _other_host, RAM_MAC, 403, "not-disk"),
    ("unknown-mac", lambda e: _boot(e)["golden.token"], "52:54:00:99:99:99", 403, "unknown-host"),
    ("no-token", lambda e: "", DISK_MAC, 400, "malformed"),
    ("not-a-mac", lambda e: _boot(e)["golden.token"], "disk1", 400, "malformed"),
]


@pytest.mark.parametrize(("make", "mac", "status", "kind"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_anything_but_the_live_attempts_token_is_refused_counted_and_changes_nothing(env: Env, make, mac: str,
                                                                                     status: int, kind: str) -> None:
    token = make(env)
    before = _slots(env)
    code, body = _plan(env, token, mac)
    assert (code, body["kind"], body["accepted"]) == (status, kind, False), body
    assert _rejects(env)[kind] == 1
    assert _slots(env) == before
    with env.db.read() as repo:
        assert repo.events_after(0, ["install-plan"]) == []
        assert any(n.kind == f"reject:{kind}" for n in repo.list_noise())


def test_bad_disks_are_400(env: Env) -> None:
    token = _boot(env)["golden.token"]
    for disks in ("vda:x", "VDA:1", "vda", ",".join(["vda:1"] * 65), "vda:1:2"):
        code, body = _plan(env, token, disks=disks)
        assert (code, body["kind"]) == (400, "malformed"), disks
    assert _slots(env) is None


def test_the_access_log_shows_no_token(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    token = _boot(env)["golden.token"]
    caplog.set_level(logging.INFO, logger="golden.serve.access")
    assert _plan(env, token)[0] == 200

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "/install/" in r.getMessage()]

    deadline = time.monotonic() + 5  # the line is written after the body went out: the client may be first
    while not lines() and time.monotonic() < deadline:
        time.sleep(0.01)
    [line] = lines()
    assert "token=***&disks=" in line and token.split(".")[0] not in line


@pytest.mark.parametrize(("line", "shown"), [
    ("GET /install/m.json?token=abc.1.-.f&disks=vda:1 HTTP/1.1", "GET /install/m.json?token=***&disks=vda:1 HTTP/1.1"),
    ("GET /boot-refused?mac=m&token=abc&errno=1 HTTP/1.1", "GET /boot-refused?mac=m&token=***&errno=1 HTTP/1.1"),
    ("GET /x?mytoken=abc HTTP/1.1", "GET /x?mytoken=abc HTTP/1.1"),  # another parameter's name, not ours
    ("GET /boot/m.ipxe HTTP/1.1", "GET /boot/m.ipxe HTTP/1.1"),
])
def test_redact_tokens(line: str, shown: str) -> None:
    assert redact_tokens(line) == shown


# ---- a slot's report ----

def test_a_verified_report_from_the_tried_slot_makes_it_active(env: Env) -> None:
    token = _boot(env)["golden.token"]
    assert _plan(env, token)[0] == 200
    code, body = _report(env, token, mac=DISK_MAC, slot="a")
    assert code == 200, body
    row = _slots(env)
    assert row is not None and (row.active, row.slot_a, row.slot_b, row.trying, row.fell_back) == (
        "a", "b2", None, None, None)


def test_a_report_from_the_old_slot_while_another_was_tried_is_a_fall_back(env: Env) -> None:
    with env.db.write() as repo:
        repo.set_slots(SlotRow("disk1", "a", "b1", "b2", "b", None, 1.0))
    channels.publish(env.db, env.store, "base", "b1", "dev", user="test")
    env.fleet.arm_attempts([("disk1", ATTEMPT, "b1")], 600)
    token = _cmdline(env.request("GET", f"/boot/{DISK_MAC}.ipxe")[2].decode())["golden.token"]
    assert _report(env, token, build="b1", mac=DISK_MAC, slot="a", drift=[])[0] == 200
    row = _slots(env)
    assert row is not None and (row.active, row.slot_a, row.slot_b, row.trying, row.fell_back) == (
        "a", "b1", "b2", None, "b2")


def test_unverified_and_slotless_reports_leave_the_slots_alone(env: Env) -> None:
    stored = SlotRow("disk1", "a", "b1", None, None, None, 1.0)
    with env.db.write() as repo:
        repo.set_slots(stored)
    unverified = _boot(env, arm=False)["golden.token"]
    assert _report(env, unverified, mac=DISK_MAC, slot="b")[0] == 200
    assert _report(env, _boot(env)["golden.token"], mac=DISK_MAC)[0] == 200  # a RAM boot names no slot
    assert _slots(env) == stored


@pytest.mark.parametrize("slot", ["c", "A", 1, ""])
def test_a_report_naming_no_slot_of_ours_is_400(env: Env, slot: object) -> None:
    code, body = _report(env, _boot(env)["golden.token"], mac=DISK_MAC, slot=slot)
    assert (code, body["kind"]) == (400, "malformed") and "slot" in body["reason"]
    assert _slots(env) is None


# ---- what the fleet shows of a disk host's slots ----

def _fleet_row(env: Env, host: str = "disk1") -> tuple:
    [h] = [h for h in env.fleet.status() if h.name == host]
    return h.state, h.desired, h.observed, h.slot, h.slot_a, h.slot_b, h.fell_back, slot_summary(h)


def test_the_fleet_shows_each_slots_build_and_a_fall_back_from_the_desired_build(env: Env) -> None:
    channels.publish(env.db, env.store, "base", "b1", "dev", user="test")
    env.fleet.arm_attempts([("disk1", ATTEMPT, "b1")], 600)
    token = _boot(env, arm=False)["golden.token"]  # v1: slot A
    assert _plan(env, token)[0] == 200
    assert _report(env, token, build="b1", mac=DISK_MAC, slot="a", drift=[])[0] == 200
    assert _fleet_row(env) == ("in-sync", "b1", "b1", "a", "b1", None, None, "a: b1 (running), b: -")
    channels.publish(env.db, env.store, "base", "b2", "dev", user="test")
    env.fleet.arm_attempts([("disk1", "d" * 16, "b2")], 600)
    token = _cmdline(env.request("GET", f"/boot/{DISK_MAC}.ipxe")[2].decode())["golden.token"]
    code, plan = _plan(env, token)  # v2 goes to slot B, which boots under the counter
    assert (code, plan["slot"]) == (200, "b"), plan
    # Slot B never blessed: the counter brought the machine back to slot A, whose agent reports b1 from there
    # (what such a report does to the row: test_a_report_from_the_old_slot_while_another_was_tried_is_a_fall_back).
    with env.db.write() as repo:
        tried = repo.get_slots("disk1")
        assert tried is not None and (tried.trying, tried.slot_b) == ("b", "b2")
        repo.set_slots(row_of("disk1", reported(state_of(tried), Slot.A, "b1"), time.time()))
    assert _fleet_row(env) == ("fell-back", "b2", "b1", "a", "b1", "b2", "b2",
                               "a: b1 (running), b: b2 (fell back)")
    assert [h.name for h in env.fleet.status() if h.state == HostState.FELL_BACK] == ["disk1"]
    [ram] = [h for h in env.fleet.status() if h.name == "ram1"]
    assert (ram.slot, ram.slot_a, ram.slot_b, ram.fell_back, slot_summary(ram)) == (None, None, None, None, "")
    channels.publish(env.db, env.store, "base", "b1", "dev", user="test")  # the operator points it back at b1
    assert _fleet_row(env)[:3] == ("in-sync", "b1", "b1")  # runs what it should: the old fall-back is history


def test_the_fleet_page_and_table_show_a_fall_back_and_the_slots() -> None:
    host = HostStatus(name="disk1", rack="rack1", mac=DISK_MAC, image="base@dev", desired="b2",
                      desired_source="channel", served="b2", observed="b1", observed_since=1.0, booted_at=None,
                      last_report=1.0, drift=(), state="fell-back", slot="a", slot_a="b1", slot_b="b2",
                      fell_back="b2")
    page = render_page(FleetPage(2.0, [host], {}, [], []))
    assert 'data-state="fell-back"' in page and COLOURS["fell-back"] in page
    assert "fell back from b2" in page  # the cell's title
    assert '"slots": "a: b1 (running), b: b2 (fell back)"' in page and '"fell_back": "b2"' in page  # the details
    assert _state(host) == "fell-back (b2)"
