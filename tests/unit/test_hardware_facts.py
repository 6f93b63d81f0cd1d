"""Hardware facts on the server: the wire format's bounds (bad input refused, table), the change
detector (what is a change of the machine and what is not, table), and the path through a real boot
server on 127.0.0.1 into state: first facts, the same machine again, a changed machine raising
hw-changed with exactly its lines, ``golden fleet``'s status, acceptance with an audit entry, and the
reimage selection by ``--state hw-changed``. On SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json

import pytest

from tests.unit.test_bootserver import Env, _report, env  # noqa: F401 - the fixture
from toolkit.fleet.hardware import FactsError, clean_facts, diff_facts, digest
from toolkit.fleet.hwfacts import accept, hardware, history
from toolkit.fleet.page import render_page
from toolkit.rollout.plan import Policy
from toolkit.rollout.service import ReimageRequest, select_by_state

BASE = {
    "system": {"vendor": "QEMU", "model": "Standard PC (Q35 + ICH9, 2009)", "serial": "GLD-0001"},
    "cpu": {"model": "QEMU Virtual CPU version 2.5+", "sockets": 1, "threads": 1},
    "memory_mib": 1536,
    "disks": [{"name": "vda", "model": "", "serial": "disk-a", "size_bytes": 1 << 30, "transport": "",
               "rotational": True},
              {"name": "vdb", "model": "", "serial": "disk-b", "size_bytes": 2 << 30, "transport": "",
               "rotational": True}],
    "nics": [{"name": "ens3", "mac": "52:54:00:00:00:01", "driver": "virtio_net", "link": "up", "speed_mbps": None}],
    "lldp": [],
}


def _with(**changes) -> dict:
    facts = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = facts
        *parents, last = path.split("__")
        for p in parents:
            node = node[p] if not p.isdigit() else node[int(p)]
        node[int(last) if last.isdigit() else last] = value
    return facts


@pytest.mark.parametrize("raw, field", [
    ("a string", "hardware"),
    ({"system": "x"}, "hardware.system"),
    (_with(memory_mib=-1), "hardware.memory_mib"),
    (_with(memory_mib=True), "hardware.memory_mib"),
    (_with(memory_mib=1.5), "hardware.memory_mib"),
    (_with(disks="vda"), "hardware.disks"),
    (_with(disks=[{}] * 257), "hardware.disks"),
    (_with(disks=["vda"]), "hardware.disks"),
    (_with(disks__0__size_bytes=1 << 63), "hardware.disks[0].size_bytes"),
    (_with(disks__0__rotational="yes"), "hardware.disks[0].rotational"),
    (_with(system__serial="x" * 257), "hardware.system.serial"),
    (_with(system__serial=42), "hardware.system.serial"),
    (_with(nics__0__mac=["52:54:00:00:00:01"]), "hardware.nics[0].mac"),
    (_with(cpu__threads=-2), "hardware.cpu.threads"),
])
def test_bad_facts_are_refused_naming_the_field(raw, field):
    with pytest.raises(FactsError) as exc:
        clean_facts(raw)
    assert str(exc.value).startswith(field + ":")


def test_clean_facts_sorts_and_strips_control_characters():
    raw = _with(system__serial="GLD-\x1b[31m0001", disks=list(reversed(BASE["disks"])))
    facts = clean_facts(raw)
    assert facts["system"]["serial"] == "GLD-[31m0001"
    assert [d["name"] for d in facts["disks"]] == ["vda", "vdb"]


DISK_C = {"name": "vdc", "model": "", "serial": "disk-c", "size_bytes": 512 << 20, "transport": "",
          "rotational": True}


@pytest.mark.parametrize("new, lines", [
    (BASE, []),
    (_with(nics__0__link="down"), []),  # a cable pulled is not another machine
    (_with(nics__0__speed_mbps=1000), []),
    (_with(lldp=[{"interface": "ens3", "chassis": "tor1", "port": "1"}]), []),
    (_with(memory_mib=1024), ["memory 1536 MiB -> 1024 MiB"]),
    (_with(disks=[*BASE["disks"], DISK_C]), ["+disk vdc (serial disk-c, 0.5 GiB)"]),
    (_with(disks=BASE["disks"][:1]), ["-disk vdb (serial disk-b, 2.0 GiB)"]),
    (_with(disks__1__serial="disk-b2"), ["+disk vdb (serial disk-b2, 2.0 GiB)", "-disk vdb (serial disk-b, 2.0 GiB)"]),
    (_with(nics__0__mac="52:54:00:00:00:99"),
     ["+nic ens3 (52:54:00:00:00:99, virtio_net)", "-nic ens3 (52:54:00:00:00:01, virtio_net)"]),
    (_with(system__serial="GLD-0002"), ["system serial GLD-0001 -> GLD-0002"]),
    (_with(cpu__threads=2), ["cpu threads 1 -> 2"]),
    (_with(memory_mib=1024, disks=[*BASE["disks"], DISK_C]),
     ["memory 1536 MiB -> 1024 MiB", "+disk vdc (serial disk-c, 0.5 GiB)"]),
])
def test_what_counts_as_a_change_of_the_machine(new, lines):
    old, new = clean_facts(BASE), clean_facts(new)
    assert diff_facts(old, new) == lines
    assert (digest(old) == digest(new)) == (lines == [])


def _facts_report(e: Env, facts: dict, token: str) -> int:
    return _report(e, token, hardware=facts)[0]


def test_facts_through_the_boot_server_into_state(env: Env):  # noqa: F811 - the fixture
    e = env
    assert _facts_report(e, BASE, e.armed_token()) == 200
    assert _facts_report(e, _with(nics__0__link="down"), e.armed_token(attempt="b" * 16)) == 200
    [first] = hardware(e.fleet, "node1")
    assert first.changed == () and first.facts is not None and first.facts["nics"][0]["link"] == "down"
    assert len(history(e.fleet, "node1")) == 1  # the same machine seen twice is one row

    grown = _with(memory_mib=1024, disks=[*BASE["disks"], DISK_C])
    assert _facts_report(e, grown, e.armed_token(attempt="c" * 16)) == 200
    lines = ("memory 1536 MiB -> 1024 MiB", "+disk vdc (serial disk-c, 0.5 GiB)")
    [after] = hardware(e.fleet, "node1")
    assert after.changed == lines
    assert [r.changes for r in history(e.fleet, "node1")] == [(), lines]
    status = {s.name: s for s in e.fleet.status()}
    assert status["node1"].hw_changed == lines and status["node2"].hw_changed == ()

    page = render_page(e.fleet.page())  # the fleet page's host details carry the change and the facts
    assert '"hw_changed": ["memory 1536 MiB -\\u003e 1024 MiB", "+disk vdc (serial disk-c, 0.5 GiB)"]' in page
    assert ("serial GLD-0001; 1x QEMU Virtual CPU version 2.5+; 1024 MiB; disks vda 1.0 GiB, vdb 2.0 GiB, "
            "vdc 0.5 GiB") in page

    req = ReimageRequest("all", "", Policy(), state="hw-changed")
    hosts = list(e.fleet.inventory().hosts)
    chosen = select_by_state(e.fleet, None, req, hosts)  # type: ignore[arg-type]  # settings: only for --stale
    assert [h.name for h in chosen] == ["node1"]

    assert accept(e.fleet, "node1", "DIMM swapped on ticket 4711") == ["node1"]
    assert hardware(e.fleet, "node1")[0].changed == ()
    with e.db.read() as repo:
        [audit] = repo.list_audit("node1", limit=1)
    assert (audit.action, audit.reason, json.loads(audit.detail)) == ("hw-accept", "DIMM swapped on ticket 4711",
                                                                       list(lines))
    assert accept(e.fleet, "node1", "again") == []  # nothing left to accept


def test_a_report_with_malformed_facts_is_refused_and_records_nothing(env: Env):  # noqa: F811 - the fixture
    e = env
    code, body = _report(e, e.armed_token(), hardware=_with(memory_mib=-5))
    assert (code, body["reason"], body["kind"]) == (400, "malformed report: bad or missing hardware", "malformed")
    assert hardware(e.fleet, "node1")[0].facts is None


def test_accept_needs_a_reason(env: Env):  # noqa: F811 - the fixture
    with pytest.raises(Exception, match="--accept needs --reason"):
        accept(env.fleet, "node1", "  ")
