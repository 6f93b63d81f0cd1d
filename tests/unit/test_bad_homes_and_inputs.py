"""Bad homes, projects, state files, listen addresses, inventories and settings (issue 24): each row is
refused with one line naming what to fix and exit status 2, and no traceback. Grow it with every case."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.boot import write_inventory
from toolkit.cli import main

MAC = "52:54:00:24:00:01"
RENDER = ("pxe", "render", "--out", "TMP/pxe", "--server-url", "http://10.0.0.1", "--interface", "lo")


def _home(tmp: Path) -> Path:
    home = tmp / "home"
    home.mkdir(mode=0o700)
    return home


def empty_db(tmp: Path) -> list[str]:
    (_home(tmp) / "state.db").write_bytes(b"")
    return ["--home", str(tmp / "home"), "runs"]


def text_db(tmp: Path) -> list[str]:
    (_home(tmp) / "state.db").write_text("channels: prod\n")
    return ["--home", str(tmp / "home"), "runs"]


def foreign_db(tmp: Path) -> list[str]:
    with sqlite3.connect(_home(tmp) / "state.db") as conn:
        conn.execute("CREATE TABLE moz_places (id INTEGER)")
    os.chmod(tmp / "home" / "state.db", 0o600)
    return ["--home", str(tmp / "home"), "runs"]


def someone_elses_db(tmp: Path) -> list[str]:
    db = _home(tmp) / "state.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    os.chmod(db, 0o644)
    os.chown(db, 65534, 65534)
    return ["--home", str(tmp / "home"), "runs"]


def busy_port(tmp: Path) -> list[str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    busy_port.sock = s  # type: ignore[attr-defined] - held open until the row is checked
    return ["--home", str(tmp / "home"), "serve", "--listen", f"127.0.0.1:{s.getsockname()[1]}"]


def inventory(text: str, name: str = "inv.yml") -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / name).write_text(text)
        return ["--home", str(tmp / "home"), "inventory", "-i", str(tmp / name)]
    return make


def golden_yaml(tmp: Path) -> list[str]:
    (tmp / "proj").mkdir()
    (tmp / "proj" / "golden.yaml").write_text("inventory: a.yml\nhome: /tmp/x\ninventory: b.yml\n")
    return ["--project", str(tmp / "proj"), "--home", str(tmp / "home"), "runs"]


def spec_duplicate(tmp: Path) -> list[str]:
    (tmp / "proj" / "images").mkdir(parents=True)
    (tmp / "proj" / "images" / "web.yaml").write_text("name: web\nbase: debian-12\nname: evil\n")
    return ["--project", str(tmp / "proj"), "--home", str(tmp / "home"), "validate"]


def project_file(tmp: Path) -> list[str]:
    (tmp / "f").write_text("")
    return ["--project", str(tmp / "f"), "validate"]


def signing_key(change: Callable[[Path], None], *verb: str) -> Callable[[Path], list[str]]:
    """A home whose signing key ``change`` spoils, then ``golden keys VERB``."""
    def make(tmp: Path) -> list[str]:
        home = _home(tmp)
        assert main(["--home", str(home), "keys", "init"]) == 0
        change(home / "keys" / "signing.key")
        return ["--home", str(home), "keys", *(verb or ("sign-builds",))]
    return make


def _rsa_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path.write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def trust_missing_file(tmp: Path) -> list[str]:
    (tmp / "proj").mkdir()
    (tmp / "proj" / "golden.yaml").write_text("trust:\n  public_keys: [keys/central.pub]\n")
    return ["--project", str(tmp / "proj"), "--home", str(tmp / "home"), "keys", "list"]


def args(*argv: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [a.replace("TMP", str(tmp)) for a in argv]


CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("--home in a missing folder", args("--home", "TMP/missing/home", "runs"),
     "cannot create the state folder TMP/missing/home: TMP/missing does not exist"),
    ("--project missing", args("--project", "TMP/nonexistent", "validate"),
     "project folder TMP/nonexistent does not exist"),
    ("--project a file", project_file, "is not a folder"),
    ("zero-length state.db", empty_db, "is empty (0 bytes): refusing to start a new one over it"),
    ("state.db that is no database", text_db, "is not an SQLite database"),
    ("another program's SQLite", foreign_db, "is another program's SQLite database (tables: moz_places)"),
    ("state.db of another user, readable by all", someone_elses_db,
     "is mode 644 and owned by uid 65534, not by us"),
    ("--listen with half a bracket", args("--home", "TMP/home", "serve", "--listen", "[::1"),
     "--listen must be ADDR:PORT"),
    ("--listen with a space", args("--home", "TMP/home", "serve", "--listen", "a b:80"), "--listen must be ADDR:PORT"),
    ("--listen with a v6 address unbracketed", args("--home", "TMP/home", "serve", "--listen", "::1:80"),
     "--listen must be ADDR:PORT"),
    ("--listen on a busy port", busy_port, "Address already in use"),
    ("--trusted-cache 0.0.0.0/0", args(*RENDER, "--trusted-cache", "0.0.0.0/0"),
     "--trusted-cache 0.0.0.0/0 trusts every address"),
    ("--trusted-cache ::/0", args(*RENDER, "--trusted-cache", "::/0"), "--trusted-cache ::/0 trusts every address"),
    ("a range of 100,000,000 hosts", inventory("[web]\nweb[0:99999999]\n", "big.ini"),
     "big.ini:2: a host range of 100,000,000 hosts; at most 100,000 per pattern"),
    ("two ranges multiplying past the cap", inventory("all:\n  hosts:\n    r[000:999]n[000:999]:\n"),
     "inv.yml:3: a host range of 1,000,000 hosts"),
    ("a host name with a newline", inventory(f'all:\n  hosts:\n    "web\\nx":\n      mac: "{MAC}"\n'),
     "host name 'web\\nx' is not a host name"),
    ("a host name with an escape sequence", inventory(f'all:\n  hosts:\n    "web\\e7":\n      mac: "{MAC}"\n'),
     "host name 'web\\x1b7' is not a host name"),
    ("golden.yaml with a key twice", golden_yaml, "golden.yaml:3:1: duplicate key 'inventory'"),
    ("image spec with a key twice", spec_duplicate, "duplicate key 'name'"),
    ("signing key readable by others", signing_key(lambda k: k.chmod(0o644)),
     "signing.key: the signing key is readable by group or others (mode 0644)"),
    ("signing key missing", signing_key(lambda k: k.unlink()), "signing.key: the signing key is missing"),
    ("signing key truncated", signing_key(lambda k: k.write_bytes(k.read_bytes()[:40])),
     "signing.key: the signing key is not a PEM private key (truncated or damaged?)"),
    ("signing key of type RSA", signing_key(_rsa_key), "signing.key: the signing key is of type RSA, not Ed25519"),
    ("signing key a folder", signing_key(lambda k: (k.unlink(), k.mkdir())), "the signing key is not a regular file"),
    ("keys rotate in a home without keys", args("--home", "TMP/home", "keys", "rotate"),
     "has no signing key to rotate"),
    ("keys init in a missing folder", args("--home", "TMP/missing/home", "keys", "init"),
     "cannot create TMP/missing/home/keys: TMP/missing does not exist"),
    ("keys list with an image name", args("--home", "TMP/home", "keys", "list", "base"),
     "golden keys list takes no image names (only sign-builds does)"),
    ("trust.public_keys naming a missing file", trust_missing_file,
     "TMP/proj/keys/central.pub: the public key is missing"),
]


@pytest.mark.parametrize("what, make, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_with_exit_2(tmp_path: Path, monkeypatch, capsys, what: str,
                                           make: Callable[[Path], list[str]], needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GOLDEN_PROJECT", raising=False)
    default = write_inventory(tmp_path / "default.yml", {"node1": (MAC, "base@prod")})
    monkeypatch.setenv("GOLDEN_INVENTORY", str(default))
    argv = make(tmp_path)
    assert main(argv) == 2, what
    err = [line for line in capsys.readouterr().err.splitlines() if "Warning" not in line and
           not line.startswith("  from ")]
    assert "Traceback" not in "\n".join(err), err
    # one error, in one line (validate lists every problem of a project under its one line)
    assert err[0].startswith("golden: error: ") and needle.replace("TMP", str(tmp_path)) in "\n".join(err[:2]), err
    assert len([line for line in err if line.startswith("golden: error")]) == 1
    assert not (tmp_path / "missing").exists() and not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("verb", [["fleet", "--unknown"], ["drift"]])
def test_values_from_outside_reach_the_terminal_escaped(tmp_path: Path, monkeypatch, capsys, verb) -> None:
    """An address from X-Forwarded-For or a path from a node's drift never drives the operator's terminal."""
    from toolkit.state.db import SQLiteStateDB

    monkeypatch.setenv("GOLDEN_INVENTORY", str(write_inventory(tmp_path / "inv.yml", {"node1": (MAC, "base@prod")})))
    db = SQLiteStateDB(tmp_path / "home" / "state.db")
    with db.write() as repo:
        repo.record_unknown("52:54:00:99:00:01", 1.0, "\x1b]0;owned\x07\x1b[2J")
        repo.ensure_host("node1", MAC)
        repo.record_drift("node1", "b1", {"/etc/\x1b[31mred\nnext": "added"}, 1.0)
    db.close()
    assert main(["--home", str(tmp_path / "home"), *verb]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\nnext" not in out
    assert ("\\x1b]0;owned\\x07\\x1b[2J" if verb[0] == "fleet" else "/etc/\\x1b[31mred\\nnext") in out


@pytest.mark.parametrize("value, want", [
    ("127.0.0.1:9090", ("127.0.0.1", 9090)), ("[::1]:80", ("::1", 80)), (":80", ("0.0.0.0", 80)),
    ("9090", ("127.0.0.1", 9090)), ("boot.example:8080", ("boot.example", 8080)), ("[fe80::1]:0", ("fe80::1", 0)),
])
def test_good_listen_values_parse(value: str, want: tuple[str, int]) -> None:
    from toolkit.boot.server import parse_listen

    assert parse_listen(value) == want
