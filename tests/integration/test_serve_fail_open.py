"""Criterion 5 of issue 24, with a real ``golden serve``: a read-only state home and database files
made immutable (``chattr +i``, also while it serves) leave boot scripts served from what can be read,
reports answered 503, and the process alive (no SIGBUS from a mapped WAL index)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.boot import ServeProcess, make_build, start_golden_serve, write_inventory
from toolkit.store.artifacts import Store

pytestmark = pytest.mark.integration
MAC = "52:54:00:00:00:01"


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True)


def _db_files(home: Path) -> list[Path]:
    return sorted(home.glob("state.db*"))


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    make_build(Store(tmp_path / "home" / "store"), "base", "b1")
    write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, "base@b1")})
    yield tmp_path
    _chattr("-i", tmp_path / "home", *_db_files(tmp_path / "home"))  # so the tmp folder can be removed


def _serve(home: Path, name: str) -> ServeProcess:
    return start_golden_serve(home / "home", home / "inventory.yml", home / f"{name}.log")


def _boot(serve: ServeProcess) -> str:
    with urllib.request.urlopen(f"{serve.url}/boot/{MAC}.ipxe", timeout=10) as resp:
        assert resp.status == 200
        script = resp.read().decode()
    assert "golden.build=b1" in script and "golden.image=base" in script  # the right script, not a fallback
    return re.search(r"golden\.token=(\S+)", script).group(1)  # type: ignore[union-attr]


def _report(serve: ServeProcess, token: str) -> int:
    body = json.dumps({"mac": MAC, "build_id": "b1", "image": "base", "token": token, "hostname": "node1",
                       "booted_at": "2026-12-07T00:00:00Z", "uptime_s": 3, "drift": [], "agent_version": "t"})
    req = urllib.request.Request(f"{serve.url}/report", body.encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _prepare(home: Path) -> None:
    first = _serve(home, "first")  # a state home made by golden, with its key and schema
    try:
        _boot(first)
    finally:
        first.stop()
    time.sleep(0.2)


def test_a_read_only_home_still_serves_boot_scripts(home: Path) -> None:
    _prepare(home)
    _chattr("+i", home / "home", *_db_files(home / "home"))
    serve = _serve(home, "ro")
    try:
        token = _boot(serve)
        assert _report(serve, token) == 503
        assert _boot(serve) and serve.proc.poll() is None
    finally:
        serve.stop()
    log = (home / "ro.log").read_text()
    assert "state database" in log and "is read-only" in log


def test_database_files_made_immutable_while_serving_never_crash_it(home: Path) -> None:
    _prepare(home)
    serve = _serve(home, "live")
    try:
        assert _report(serve, _boot(serve)) == 200  # writable: a fetched token is recorded and accepted
        _chattr("+i", *_db_files(home / "home"))
        for _ in range(5):
            token = _boot(serve)
            assert serve.proc.poll() is None  # alive: no SIGBUS
        assert _report(serve, token) == 503
        assert _boot(serve) and serve.proc.poll() is None
    finally:
        serve.stop()
