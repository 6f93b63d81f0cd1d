"""Cleaning reports (POST /clean) over real HTTP against the boot server, and the retire gate.

A cleaning report counts only with the token of a live attempt's boot script on a host that
golden retire marked ``cleaning``; it can only ever make the host clean or clean-failed (never
in-sync: it sets no observed build); the outcome is the server's reading of the disks, not the
node's summary. A host in cleaning or clean-failed is refused by reimage until cleared (audited).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build, write_inventory
from tests.unit.test_bootserver import MAC1, Env, _cmdline, env  # noqa: F401 - the fixture
from toolkit.cli import main
from toolkit.core.config import load_settings
from toolkit.fleet.fleet import open_fleet
from toolkit.rollout.retire import clear_cleaning, mark_cleaning, settle_cleaning
from toolkit.store.artifacts import Store

ERASED = {"name": "vda", "kind": "virtio", "size_bytes": 1 << 30, "serial": "D0", "model": "", "result": "erased",
          "method": "zeroout", "detail": "10 MiB windows read back as zero",
          "attempts": [{"method": "zeroout", "rc": 0, "verified": True, "detail": "ok"}]}
FAILED = {**ERASED, "name": "vdb", "result": "failed", "method": "", "detail": "the disk is read-only",
          "attempts": []}


def _post(e: Env, token: str, disks: list[dict], result: str = "clean") -> tuple[int, dict]:
    body = json.dumps({"mac": MAC1, "build_id": "b2", "image": "base", "token": token, "result": result,
                       "disks": disks}).encode()
    code, _, reply = e.request("POST", "/clean", body, {"Content-Type": "application/json"})
    return code, json.loads(reply)


def _retiring(e: Env) -> str:
    mark_cleaning(e.fleet, ["node1"], "alice", "RMA", "run1")
    return e.armed_token()


def _state(e: Env) -> tuple[str, str | None]:
    [status] = e.fleet.status("node1")
    return status.state, status.observed


@pytest.mark.parametrize("disks, claimed, state", [
    ([ERASED], "clean", "clean"),
    ([ERASED, {**ERASED, "name": "nvme0n1", "kind": "nvme", "method": "nvme-format-erase"}], "clean", "clean"),
    ([ERASED, FAILED], "failed", "clean-failed"),
    ([ERASED, FAILED], "clean", "clean-failed"),  # the node's summary is not believed: the disks are
    ([{**ERASED, "method": ""}], "clean", "clean-failed"),  # "erased" by no named method
    ([], "clean", "clean-failed"),  # no disk found proves nothing
])
def test_a_cleaning_report_makes_the_host_clean_or_clean_failed(env: Env, disks: list[dict], claimed: str,  # noqa: F811
                                                                  state: str) -> None:
    code, body = _post(env, _retiring(env), disks, claimed)
    assert (code, body["state"]) == (200, state)
    assert _state(env) == (state, None)  # never in-sync: no observed build
    with env.db.read() as repo:
        [event] = repo.events_after(0, ["clean"])
        audit = [a for a in repo.list_audit() if a.action == state]
        mark = repo.get_cleaning("node1")
    assert json.loads(event.detail)["attempt"] == "a" * 16 and json.loads(event.detail)["result"] == state
    assert len(audit) == 1 and [d["name"] for d in json.loads(audit[0].detail)["disks"]] == [d["name"] for d in disks]
    assert mark is not None and [d["name"] for d in mark.disks] == [d["name"] for d in disks]


def _unsolicited(e: Env) -> str:
    mark_cleaning(e.fleet, ["node1"], "alice", "RMA", "run1")
    return _cmdline(e.request("GET", f"/boot/{MAC1}.ipxe")[2].decode())["golden.token"]


def _not_retiring(e: Env) -> str:
    return e.armed_token()  # a live reimage attempt, but nobody asked for a retire


def _ended(e: Env) -> str:
    token = _retiring(e)
    e.fleet.disarm_attempts([("node1", "a" * 16)])
    return token


@pytest.mark.parametrize("token, kind", [(_unsolicited, "ended"), (_not_retiring, "ended"), (_ended, "ended")],
                         ids=["no attempt", "host not retiring", "attempt over"])
def test_a_cleaning_report_outside_a_retire_attempt_changes_nothing(env: Env, token, kind: str) -> None:  # noqa: F811
    t = token(env)
    before = _state(env)
    code, body = _post(env, t, [ERASED])
    assert (code, body["kind"]) == (403, kind)
    assert _state(env) == before
    with env.db.read() as repo:
        assert repo.events_after(0, ["clean"]) == []


def test_a_cleaning_report_cannot_be_replayed(env: Env) -> None:  # noqa: F811
    token = _retiring(env)
    assert _post(env, token, [ERASED, FAILED])[0] == 200
    mark_cleaning(env.fleet, ["node1"], "alice", "again", "run2")  # even during a later retire
    code, body = _post(env, token, [ERASED])
    assert (code, body["kind"]) == (403, "replay")
    assert _state(env)[0] == "cleaning"


def test_a_retire_without_a_report_ends_clean_failed_and_clear_is_audited(env: Env) -> None:  # noqa: F811
    mark_cleaning(env.fleet, ["node1"], "alice", "RMA", "run1")
    settle_cleaning(env.fleet, {"node1": "failed"}, {"node1": "no genuine report of build b2 within 900 s"})
    assert _state(env)[0] == "clean-failed"
    assert clear_cleaning(env.fleet, ["node1"], "bob", "erased by hand, ticket 7") == ["node1"]
    assert _state(env)[0] != "clean-failed"
    with env.db.read() as repo:
        actions = [(a.action, a.user) for a in repo.list_audit()]
    assert ("retire", "alice") in actions and ("clean-failed", "golden retire") in actions
    assert ("retire-clear", "bob") in actions


@pytest.mark.parametrize("state", ["cleaning", "clean-failed"])
def test_reimage_refuses_a_host_that_is_not_cleared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], state: str) -> None:
    home = tmp_path / "home"
    make_build(Store(home / "store"), "web", "bbbbbbbbbbbbbbbb")
    inv = write_inventory(tmp_path / "inv.yml", {f"n{i}": (f"52:54:00:00:01:0{i}", "web@prod") for i in range(2)})
    monkeypatch.setenv("GOLDEN_INVENTORY", str(inv))
    fleet = open_fleet(load_settings(home=home))
    with fleet.db.write() as repo:
        repo.set_cleaning("n1", state, time.time(), "", "erase of vdb failed")
    argv = ["--home", str(home), "reimage", "all", "--image", "web@bbbbbbbbbbbbbbbb", "--dry-run"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == (f"golden: error: refused by the retire gate: n1 ({state}) must not be given a build "
                      "(a retire is under way or its clean failed)"), err
    assert not any("Traceback" in line for line in err)
    with fleet.db.write() as repo:
        repo.clear_cleaning("n1")
    assert main(argv) == 0  # cleared: the same command plans it
