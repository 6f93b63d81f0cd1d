"""The boot server's view of the inventory while it is being read (found by the 10,000-host bench).

Requests arriving while the first load of a large inventory was still running saw an empty map and
told real machines they were unknown (they fall through to their disk, and the reimage waits for
them in vain). The first load must be waited for; a re-read may answer from the previous map.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import toolkit.fleet.fleet as fleet_mod
from toolkit.fleet.fleet import Fleet
from toolkit.state.db import SQLiteStateDB
from toolkit.store.artifacts import Store

INVENTORY = """all:
  hosts:
    n1:
      mac: "52:54:00:00:00:01"
      image: base@{ch}
    n2:
      mac: "52:54:00:00:00:02"
      image: base@{ch}
"""
MAC1 = "52:54:00:00:00:01"


@pytest.fixture
def slow_load(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """load_inventory as it is, but each call waits until the test lets it go."""
    real = fleet_mod.load_inventory
    go = threading.Event()

    def slow(*args, **kwargs):
        go.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(fleet_mod, "load_inventory", slow)
    return go


def _fleet(tmp_path: Path, ch: str = "dev") -> tuple[Fleet, Path]:
    inv = tmp_path / "inventory.yml"
    inv.write_text(INVENTORY.format(ch=ch))
    return Fleet(SQLiteStateDB(tmp_path / "state.db"), Store(tmp_path / "store"), inv), inv


def _lookup_in_thread(fleet: Fleet) -> tuple[threading.Thread, list]:
    got: list = []
    t = threading.Thread(target=lambda: got.append(fleet.host_by_mac(MAC1)))
    t.start()
    return t, got


def test_first_load_is_waited_for_by_every_request(tmp_path: Path, slow_load: threading.Event):
    fleet, _ = _fleet(tmp_path)
    first, got1 = _lookup_in_thread(fleet)
    time.sleep(0.2)  # the first request is inside the load
    second, got2 = _lookup_in_thread(fleet)
    time.sleep(0.2)
    assert second.is_alive(), "a request during the first load must wait for it, not answer from an empty map"
    slow_load.set()
    first.join(10)
    second.join(10)
    assert [h.name if h else None for h in got1 + got2] == ["n1", "n1"]


def test_a_reread_answers_from_the_previous_inventory(tmp_path: Path, slow_load: threading.Event):
    slow_load.set()
    fleet, inv = _fleet(tmp_path)
    assert fleet.host_by_mac(MAC1).image == "base@dev"
    slow_load.clear()
    inv.write_text(INVENTORY.format(ch="prod"))
    st = inv.stat()
    os.utime(inv, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    first, got1 = _lookup_in_thread(fleet)  # starts the re-read, waits in it
    time.sleep(0.2)
    second, got2 = _lookup_in_thread(fleet)
    second.join(2)
    assert not second.is_alive() and got2[0].image == "base@dev"  # not blocked: the map as it was
    slow_load.set()
    first.join(10)
    assert got1[0].image == "base@prod"
    assert fleet.host_by_mac(MAC1).image == "base@prod"


def test_a_broken_first_inventory_is_an_error_for_every_request_not_an_empty_one(tmp_path: Path):
    from toolkit.core.errors import InputError

    inv = tmp_path / "inventory.yml"
    inv.write_text(INVENTORY.format(ch="dev").replace("00:00:00:02", "00:00:00:01"))  # two hosts, one MAC
    fleet = Fleet(SQLiteStateDB(tmp_path / "state.db"), Store(tmp_path / "store"), inv)
    for _ in range(3):  # the first request reads it; the next ones, within the second, must not see "no hosts"
        with pytest.raises(InputError, match="is also host n1"):
            fleet.host_by_mac(MAC1)
