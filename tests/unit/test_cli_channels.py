"""The channel verbs through the real CLI parser: output, --json, exit codes, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build, write_inventory
from toolkit.cli import main
from toolkit.state.db import SQLiteStateDB
from toolkit.state.slots import SlotRow
from toolkit.store.artifacts import Store


@pytest.fixture
def home(tmp_path: Path) -> Path:
    store = Store(tmp_path / "home" / "store")
    make_build(store, "base", "b1", age_rank=1)
    make_build(store, "base", "b2", age_rank=2)
    make_build(store, "base", "bad", age_rank=3, checks_passed=False)
    return tmp_path / "home"


def golden(home: Path, *args: str) -> int:
    return main(["--home", str(home), *args])


def test_publish_promote_rollback_flow(home, capsys):
    assert golden(home, "publish", "base", "b1", "--channel", "dev") == 0
    assert golden(home, "promote", "base", "--from", "dev", "--to", "prod") == 0
    assert golden(home, "publish", "base", "b2", "--channel", "dev") == 0
    assert golden(home, "promote", "base", "--from", "dev", "--to", "prod") == 0
    capsys.readouterr()
    assert golden(home, "--json", "rollback", "base", "--channel", "prod", "--reason", "INC-7") == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["from_build"], out["to_build"], out["action"], out["reason"]) == ("b2", "b1", "rollback", "INC-7")
    assert golden(home, "--json", "images") == 0
    images = json.loads(capsys.readouterr().out)
    assert images[0]["channels"] == {"dev": "b2", "prod": "b1"}
    assert [b["build_id"] for b in images[0]["builds"]] == ["bad", "b2", "b1"]
    assert golden(home, "images") == 0
    table = capsys.readouterr().out
    assert "NOT PASSED" in table and "prod" in table and "KiB" in table
    assert golden(home, "--json", "images", "--history", "base") == 0
    hist = json.loads(capsys.readouterr().out)
    assert [h["action"] for h in hist] == ["publish", "promote", "publish", "promote", "rollback"]
    assert all(h["user"] for h in hist)


def test_promote_unchecked_is_refused_by_the_gate(home, capsys):
    golden(home, "publish", "base", "bad", "--channel", "dev")
    capsys.readouterr()
    # a gate refusing is a failed operation (1), not bad input (2)
    assert golden(home, "promote", "base", "--from", "dev", "--to", "staging") == 1
    err = capsys.readouterr().err
    assert "refused by the checks gate" in err and "has not passed its checks (ssh-no-passwords)" in err
    assert "Traceback" not in err
    assert golden(home, "promote", "base", "--from", "dev", "--to", "staging", "--force") == 2
    assert golden(home, "promote", "base", "--from", "dev", "--to", "staging", "--force", "--reason", "demo") == 0
    assert "FORCED" in capsys.readouterr().out


def test_unknown_build_and_empty_rollback_exit_2(home, capsys):
    assert golden(home, "publish", "base", "nope", "--channel", "dev") == 2
    assert golden(home, "rollback", "base", "--channel", "prod") == 2
    assert "nothing to roll back" in capsys.readouterr().err


def test_gc_cli_keeps_referenced(home, tmp_path, capsys):
    golden(home, "publish", "base", "b1", "--channel", "prod")
    inv = write_inventory(tmp_path / "inv.yml", {"node1": ("52:54:00:00:00:01", "base@b2")})
    capsys.readouterr()
    assert golden(home, "--json", "gc", "--keep", "0", "--dry-run", "-i", str(inv)) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [d["build_id"] for d in plan["delete"]] == ["bad"]
    assert {k["build_id"] for k in plan["keep"]} == {"b1", "b2"}
    assert len(Store(home / "store").builds("base")) == 3
    assert golden(home, "gc", "--keep", "0", "-i", str(inv)) == 0
    assert [b.build_id for b in Store(home / "store").builds("base")] == ["b2", "b1"]


def test_fleet_cli(home, tmp_path, capsys):
    golden(home, "publish", "base", "b2", "--channel", "dev")
    inv = write_inventory(tmp_path / "inv.yml", {"node1": ("52:54:00:00:00:01", "base@dev"),
                                                  "node2": ("52:54:00:00:00:02", "base@prod")})
    capsys.readouterr()
    assert golden(home, "--json", "fleet", "-i", str(inv)) == 0
    hosts = {h["name"]: h for h in json.loads(capsys.readouterr().out)}
    assert hosts["node1"]["desired"] == "b2" and hosts["node1"]["state"] == "never-reported"
    assert hosts["node1"]["rack"] == "rack1"
    assert hosts["node2"]["desired"] is None and hosts["node2"]["state"] == "no-build"
    assert golden(home, "fleet", "-i", str(inv), "node1") == 0
    out = capsys.readouterr().out
    assert "node1" in out and "node2" not in out
    assert golden(home, "fleet", "-i", str(inv), "nosuchhost") == 2


def test_fleet_cli_shows_a_disk_hosts_slots_and_its_fall_back(home, tmp_path, capsys):
    golden(home, "publish", "base", "b2", "--channel", "dev")
    inv = write_inventory(tmp_path / "inv.yml", {"node1": ("52:54:00:00:00:01", "base@dev"),
                                                  "node2": ("52:54:00:00:00:02", "base@dev")})
    inv.write_text(inv.read_text().replace("node1:\n", "node1:\n          install: disk\n          uefi: true\n", 1))
    assert golden(home, "fleet", "-i", str(inv)) == 0  # the state database exists from here on
    capsys.readouterr()
    with SQLiteStateDB(home / "state.db").write() as repo:  # slot A runs b1; b2 in slot B fell back
        repo.set_slots(SlotRow("node1", "a", "b1", "b2", None, "b2", 1.0))
        repo.set_slots(SlotRow("node2", "a", "b1", None, None, None, 1.0))  # a RAM host now: its old row is ignored
    assert golden(home, "--json", "fleet", "-i", str(inv)) == 0
    hosts = {h["name"]: h for h in json.loads(capsys.readouterr().out)}
    slots = ("slot", "slot_a", "slot_b", "fell_back")
    assert [hosts["node1"][k] for k in slots] == ["a", "b1", "b2", "b2"]
    assert [hosts["node2"][k] for k in slots] == [None, None, None, None]
    assert golden(home, "fleet", "-i", str(inv)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "SLOTS"
    [node1] = [ln for ln in lines if ln.startswith("node1")]
    [node2] = [ln for ln in lines if ln.startswith("node2")]
    assert node1.endswith("a: b1 (running), b: b2 (fell back)") and node2.rstrip().endswith("never-reported  -")
    assert golden(home, "fleet", "-i", str(inv), "node2") == 0
    assert "SLOTS" not in capsys.readouterr().out  # no disk host listed, no column
