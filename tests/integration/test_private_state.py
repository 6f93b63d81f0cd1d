"""Criterion 1 of issue 24: a state home made by ``golden`` as root, at the default path and with
``--home``, keeps its key and database from every other local user. Checked as user ``nobody``
(``runuser``) against a real ``golden serve`` that created the database and its HMAC key."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.boot import GOLDEN, golden_env, make_build, start_golden_serve, write_inventory
from toolkit.store.artifacts import Store

pytestmark = pytest.mark.integration
MAC = "52:54:00:00:00:01"


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A folder every user may enter (pytest's tmp folders are 0700: they would hide everything)."""
    base = Path(tempfile.mkdtemp(prefix="golden-private-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=False)


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True, text=True, timeout=30)


def _assert_private(home: Path) -> None:
    db = home / "state.db"
    with sqlite3.connect(db) as conn:  # as root: the key is there to steal
        assert conn.execute("SELECT COUNT(*) FROM shared_secrets").fetchone()[0] == 1
    assert home.stat().st_mode & 0o777 == 0o700
    secrets = [p for p in home.rglob("*") if p.is_file() and "store" not in p.relative_to(home).parts]
    assert db in secrets
    for path in secrets:
        assert path.stat().st_mode & 0o077 == 0, path
        got = _as_nobody("cat", str(path))
        assert got.returncode != 0 and "Permission denied" in got.stderr, path
    listing = _as_nobody("ls", str(home))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr
    peek = _as_nobody("python3", "-c", f"import sqlite3; print(sqlite3.connect('file:{db}?mode=ro', uri=True)"
                                       ".execute('SELECT value FROM shared_secrets').fetchall())")
    assert peek.returncode != 0 and "unable to open database file" in peek.stderr


def test_a_home_given_with_home_is_private(open_base: Path) -> None:
    home = open_base / "home"
    make_build(Store(home / "store"), "base", "b1")  # the store made first, 0755, as a bake would
    write_inventory(open_base / "inventory.yml", {"node1": (MAC, "base@b1")})
    serve = start_golden_serve(home, open_base / "inventory.yml", open_base / "serve.log")
    serve.stop()
    _assert_private(home)


def test_the_default_home_of_root_is_private(open_base: Path) -> None:
    """/var/lib/golden, in a mount namespace of its own so the machine's real one is never touched."""
    out = open_base / "serve.out"
    script = (f"mount --make-rprivate / && mount --bind {open_base} /var/lib && "
              f"{{ {GOLDEN} serve --listen 127.0.0.1:0 > {out} 2>&1 & p=$!; "
              f"for i in $(seq 120); do grep -q listening {out} && break; sleep 0.5; done; kill $p; wait $p; }}")
    env = {k: v for k, v in {**os.environ, **golden_env()}.items() if k != "GOLDEN_HOME"}
    subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, timeout=90, check=False)
    assert "listening" in out.read_text(), out.read_text()
    assert os.geteuid() == 0
    _assert_private(open_base / "golden")
