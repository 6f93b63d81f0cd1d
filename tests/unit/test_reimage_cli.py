"""golden reimage / runs through the CLI on a small fake store: dry run, input errors, confirmation."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build, write_inventory
from tests.fixtures.postgres import BACKENDS
from toolkit.cli import main
from toolkit.core.config import load_settings
from toolkit.fleet.slots import row_of
from toolkit.install.slots import Slot, SlotState
from toolkit.rollout.leases import take_leases
from toolkit.state import open_state
from toolkit.state.db import SQLiteStateDB
from toolkit.store.artifacts import Store


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    home = tmp_path / "home"
    store = Store(home / "store")
    make_build(store, "web", "bbbbbbbbbbbbbbbb")
    inv = write_inventory(tmp_path / "inv.yml", {f"n{i}": (f"52:54:00:00:01:0{i}", "web@prod") for i in range(4)})
    monkeypatch.setenv("GOLDEN_INVENTORY", str(inv))
    return home, inv


def _db_digest(home: Path) -> str:
    # read the file directly: the test must see every table, not only what the state layer exposes
    conn = sqlite3.connect(home / "state.db")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    dump = {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t}")] for t in tables if t != "schema_migrations"}
    conn.close()
    return hashlib.sha256(json.dumps(dump, sort_keys=True, default=str).encode()).hexdigest()


def test_dry_run_prints_the_plan_and_changes_nothing(home, capsys):
    h, _ = home
    SQLiteStateDB(h / "state.db").close()
    before = _db_digest(h)
    rc = main(["--home", str(h), "--json", "reimage", "all", "--image", "web@bbbbbbbbbbbbbbbb", "--canary", "1",
               "--wave-size", "2", "--dry-run"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["dry_run"] is True
    waves = out["plan"]["waves"]
    assert [len(w["hosts"]) for w in waves] == [1, 2, 1] and waves[0]["canary"] is True
    assert out["plan"]["target_build"] == "bbbbbbbbbbbbbbbb"
    assert _db_digest(h) == before
    assert main(["--home", str(h), "--json", "runs"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_dry_run_shows_each_hosts_hooks_and_each_groups_budget(home, capsys, tmp_path, monkeypatch):
    h, _ = home
    project = tmp_path / "project"
    for sub in ("images", "roles", "playbooks"):
        (project / sub).mkdir(parents=True)
    for name in ("lb-drain", "web-verify", "lb-enable"):
        (project / "playbooks" / f"{name}.yml").write_text("- hosts: all\n  tasks: []\n")
    (project / "golden.yaml").write_text(
        "rollout:\n  hooks:\n    - hosts: n0:n1\n      drain: playbooks/lb-drain.yml\n"
        "      verify: playbooks/web-verify.yml\n      undrain: playbooks/lb-enable.yml\n"
        "      timeout: 2m\n      settle: 5s\n      max_unavailable: 50%\n")
    before = _db_digest(h) if (h / "state.db").exists() else None
    argv = ["--project", str(project), "--home", str(h), "reimage", "all", "--image", "web@bbbbbbbbbbbbbbbb",
            "--canary", "0", "--wave-size", "4", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "note: hosts n0:n1: at most 1 of 2 out of rotation at once (max_unavailable)" in out
    assert "hooks for n0:n1: drain lb-drain.yml, verify web-verify.yml, undrain lb-enable.yml " \
           "(timeout 120 s, settle 5 s, at most 50% out at once)" in out
    rows = {line.split()[1]: line.split()[-1] for line in out.splitlines() if line.strip().startswith("1 ")}
    assert rows == {"n0": "n0:n1", "n1": "n0:n1", "n2": "-", "n3": "-"}, out
    assert main(["--json", *argv]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["hooks"]["groups"] == [{"key": "n0:n1", "budget": 1, "size": 2, "members": ["n0", "n1"]}]
    assert plan["hooks"]["by_host"] == {"n0": [0], "n1": [0]}
    assert before is None or _db_digest(h) == before


def _host_vars(inv: Path, **hosts: str) -> None:
    folder = inv.parent / "host_vars"
    folder.mkdir(exist_ok=True)
    for name, body in hosts.items():
        (folder / f"{name}.yml").write_text(body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dry_run_shows_the_slot_each_disk_host_writes(home, capsys, monkeypatch, request, backend):
    """n0 (no known slots) writes A, n1 (running A) writes B, n2 (running B) writes A; RAM hosts have none."""
    h, inv = home
    if backend == "postgresql":
        monkeypatch.setenv("GOLDEN_STATE_URL", request.getfixturevalue("pg_url"))
    disk = "install: disk\nuefi: true\n"
    _host_vars(inv, n0=disk, n1=disk, n2=disk)
    db = open_state(load_settings(home=h))
    with db.write() as repo:
        repo.set_slots(row_of("n1", SlotState(active=Slot.A, a="aaaaaaaaaaaaaaaa"), 1.0))
        repo.set_slots(row_of("n2", SlotState(active=Slot.B, a="a1", b="b1", fell_back="a1"), 2.0))
    with db.read() as repo:
        assert repo.get_slots("n2") == row_of("n2", SlotState(active=Slot.B, a="a1", b="b1", fell_back="a1"), 2.0)
        assert repo.get_slots("n3") is None
    db.close()
    argv = ["--home", str(h), "reimage", "all", "--image", "web@bbbbbbbbbbbbbbbb", "--canary", "0", "--wave-size", "4",
            "--dry-run"]
    assert main(["--json", *argv]) == 0
    assert json.loads(capsys.readouterr().out)["plan"]["slots"] == {"n0": "a", "n1": "b", "n2": "a"}
    assert main(argv) == 0
    out = capsys.readouterr().out
    header = next(line.split() for line in out.splitlines() if line.split()[:1] == ["wave"])
    rows = {line.split()[1]: line.split()[header.index("slot")] for line in out.splitlines()
            if line.strip().startswith("1 ")}  # one wave, no canary: the unnamed column is empty in both
    assert rows == {"n0": "a", "n1": "b", "n2": "a", "n3": "-"}, out


def test_a_bios_host_asking_for_a_disk_install_is_refused_at_plan_time(home, capsys):
    h, inv = home
    _host_vars(inv, n1="install: disk\n", n2="install: disk\nuefi: true\n")
    rc = main(["--home", str(h), "reimage", "all", "--image", "web@bbbbbbbbbbbbbbbb", "--dry-run"])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert rc == 2 and "Traceback" not in err
    assert lines[0] == "golden: error: host n1: install: disk needs UEFI firmware, and the inventory says uefi: false"
    assert all(line.startswith("hint:") for line in lines[1:]), err


def test_a_real_reimage_of_a_disk_host_is_refused_until_its_installer_exists(home, capsys):
    """Netbooting a disk host into RAM would report done for an install that never happened."""
    h, inv = home
    _host_vars(inv, n2="install: disk\nuefi: true\n")
    rc = main(["--home", str(h), "reimage", "all", "--image", "web@bbbbbbbbbbbbbbbb", "--yes"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.splitlines()[0] == ("golden: error: install: disk is planned but not carried out yet: "
                                   "n2 would boot in RAM")
    assert main(["--home", str(h), "--json", "runs"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # no run was started, no host touched


@pytest.mark.parametrize("argv, needle", [
    (["reimage", "all", "--image", "web"], "--image must look like <name>@<channel> or <name>@<build-id>"),
    (["reimage", "all", "--image", "web@nope"], "no channel 'nope' and no build web/nope"),
    (["reimage", "nosuch*", "--image", "web@bbbbbbbbbbbbbbbb"], "matches no host"),
    (["reimage", "all", "--image", "web@bbbbbbbbbbbbbbbb"], "pass --yes"),
    (["reimage", "--resume", "nope"], "no reimage run 'nope'"),
    (["runs", "show", "nope"], "no run 'nope'"),
])
def test_bad_input_exits_2_with_a_clear_message(home, capsys, argv, needle):
    h, _ = home
    assert main(["--home", str(h), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_run_over_leased_hosts_is_refused_naming_the_first(home, capsys, monkeypatch, request, backend):
    h, _ = home
    if backend == "postgresql":
        monkeypatch.setenv("GOLDEN_STATE_URL", request.getfixturevalue("pg_url"))
    db = open_state(load_settings(home=h))
    take_leases(db, ["n2"], "r-first", "other-controller:1:x")  # a live run elsewhere holds n2
    rc = main(["--home", str(h), "reimage", "all", "--image", "web@bbbbbbbbbbbbbbbb", "--yes"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "n2 are leased by reimage run r-first" in err and "Traceback" not in err
    assert main(["--home", str(h), "--json", "runs"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # refused before the journal: no run, no BMC touched
    db.close()
