"""Keys and signed builds (issue 25, criterion 5): key files refused when missing, too open, of the wrong
type or damaged; signatures checked good, edited, by the wrong key, by a rotated key, by an unknown key;
publish, promote and the boot server refusing what does not verify. Real Ed25519 (cryptography), real
store folders, a real HTTP server on loopback; nothing mocked."""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.fixtures.boot import http_get, make_build, write_inventory
from toolkit.boot.running import start_in_thread
from toolkit.boot.server import ServerConfig, make_server
from toolkit.core.errors import GateError, GoldenError
from toolkit.fleet.fleet import Fleet
from toolkit.state.db import SQLiteStateDB
from toolkit.store import channels
from toolkit.store.artifacts import Build, Store
from toolkit.trust.keys import (
    SIGNING_KEY,
    SIGNING_PUB,
    KeyFileError,
    Keyring,
    init_keys,
    key_id,
    list_keys,
    load_private_key,
    rotate_signing_key,
)
from toolkit.trust.signing import SIGNATURE, SignatureError, check_artifacts, sign_folder, verify_build

MAC = "52:54:00:25:00:01"


def _keyring(tmp: Path, name: str = "home") -> Keyring:
    ring = Keyring(tmp / name / "keys")
    init_keys(ring, only={"signing"})  # the Secure Boot kind (RSA, openssl) is tested in tests/integration/test_uki.py
    return ring


def _pem(key: object, password: bytes | None = None) -> bytes:
    enc = (serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)  # type: ignore[attr-defined]


# ---- key files ----

def _replace(data: Callable[[bytes], bytes], mode: int = 0o600) -> Callable[[Path], None]:
    def change(key: Path) -> None:
        new = data(key.read_bytes())
        key.unlink()
        key.write_bytes(new)
        key.chmod(mode)
    return change


def _chmod(mode: int) -> Callable[[Path], None]:
    return lambda key: key.chmod(mode)


def _folder(key: Path) -> None:
    key.unlink()
    key.mkdir(mode=0o700)


KEY_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("missing", lambda key: key.unlink(), "the signing key is missing"),
    ("group-readable 0640", _chmod(0o640), "readable by group or others (mode 0640)"),
    ("world-readable 0604", _chmod(0o604), "readable by group or others (mode 0604)"),
    ("0644", _chmod(0o644), "(mode 0644); golden uses a private key only from a 0600 file"),
    ("a folder", _folder, "the signing key is not a regular file"),
    ("truncated", _replace(lambda b: b[: len(b) // 2]), "not a PEM private key (truncated or damaged?)"),
    ("empty", _replace(lambda b: b""), "not a PEM private key (truncated or damaged?)"),
    ("one flipped base64 letter", _replace(lambda b: b.replace(b"MC4C", b"MC5C")), "not a PEM private key"),
    ("garbage", _replace(lambda b: os.urandom(200)), "not a PEM private key"),
    ("a public key", _replace(lambda b: Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)), "not a PEM private key"),
    ("RSA", _replace(lambda b: _pem(rsa.generate_private_key(65537, 2048))), "is of type RSA, not Ed25519"),
    ("EC P-256", _replace(lambda b: _pem(ec.generate_private_key(ec.SECP256R1()))),
     "is of type EC, not Ed25519"),
    ("passphrase-protected", _replace(lambda b: _pem(Ed25519PrivateKey.generate(), b"pw")),
     "protected by a passphrase"),
    ("100 KiB", _replace(lambda b: b * 900), "bytes, not a PEM Ed25519 key"),
]


@pytest.mark.parametrize("what, change, needle", KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_an_unusable_signing_key_is_refused_with_one_line_naming_the_file(tmp_path, what, change, needle):
    ring = _keyring(tmp_path)
    key = ring.folder / SIGNING_KEY
    secret_body = key.read_bytes().splitlines()[1]  # the base64 of the private key
    change(key)
    with pytest.raises(KeyFileError) as exc:
        ring.signing_key()
    message = f"{exc.value.message} {exc.value.hint}"
    assert needle in exc.value.message and str(key) in exc.value.message, message
    assert "\n" not in exc.value.message and exc.value.exit_code == 2
    assert secret_body.decode() not in message and secret_body[:12].decode() not in message


def test_a_bake_in_a_home_whose_signing_key_is_too_open_is_refused_before_it_starts(tmp_path, capsys):
    from tests.fixtures.common import ROOT
    from toolkit.cli import main

    ring = _keyring(tmp_path)
    (ring.folder / SIGNING_KEY).chmod(0o640)
    assert main(["--project", str(ROOT), "--home", str(tmp_path / "home"), "bake", "base"]) == 2
    err = capsys.readouterr().err
    assert "bake base: failed after " in err and "the signing key is readable by group or others (mode 0640)" in err
    assert "Traceback" not in err and not (tmp_path / "home" / "store").exists()


def test_a_key_file_golden_writes_is_0600_in_a_0700_folder_and_its_public_key_is_beside_it(tmp_path):
    ring = _keyring(tmp_path)
    assert (ring.folder / SIGNING_KEY).stat().st_mode & 0o777 == 0o600
    assert ring.folder.stat().st_mode & 0o777 == 0o700
    kid, key = ring.signing_key()
    assert kid == key_id(key.public_key()) and len(kid) == 16
    assert set(ring.trusted()) == {kid} and (ring.folder / "trusted" / f"{kid}.pub").is_file()
    assert load_private_key(ring.folder / SIGNING_KEY).public_key() == ring.trusted()[kid]


def test_init_again_keeps_the_key_and_rotate_keeps_the_old_one_trusted(tmp_path):
    ring = _keyring(tmp_path)
    first, _ = ring.signing_key()
    again = init_keys(ring, only={"signing"})
    assert [(r.kind, r.created) for r in again] == [("signing", False)] and ring.signing_key()[0] == first
    old, new = rotate_signing_key(ring)
    assert old == first and new != first and ring.signing_key()[0] == new
    rows = list_keys(ring)
    assert [(k.key_id, k.signs) for k in rows] == [(new, True), (first, False)]
    assert all(k.created for k in rows)


def test_rotate_works_from_a_lost_private_key_and_refuses_a_home_without_keys(tmp_path):
    ring = _keyring(tmp_path)
    first, _ = ring.signing_key()
    (ring.folder / SIGNING_KEY).unlink()
    old, new = rotate_signing_key(ring)
    assert old == first and ring.signing_key()[0] == new
    with pytest.raises(KeyFileError, match="has no signing key to rotate"):
        rotate_signing_key(Keyring(tmp_path / "empty" / "keys"))


PUBLIC_CASES = [
    ("RSA public key", lambda: rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), "is of type RSA, not Ed25519"),
    ("truncated", lambda: Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)[:60], "truncated or damaged"),
    ("text", lambda: b"hello\n", "not a PEM (or ssh-ed25519) public key"),
]


@pytest.mark.parametrize("what, data, needle", PUBLIC_CASES, ids=[c[0] for c in PUBLIC_CASES])
def test_an_unusable_trusted_key_file_is_refused(tmp_path, what, data, needle):
    bad = tmp_path / "site.pub"
    bad.write_bytes(data())
    ring = Keyring(tmp_path / "home" / "keys", (bad,))
    with pytest.raises(KeyFileError, match=r"site\.pub: ") as exc:
        ring.trusted()
    assert needle in exc.value.message


def test_configured_keys_come_as_files_folders_and_ssh_lines(tmp_path):
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "b.pub").write_bytes(b.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "dir" / "ignored.txt").write_text("not a key")
    (tmp_path / "a.pub").write_bytes(a.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b" ops@site\n")
    ring = Keyring(tmp_path / "home" / "keys", (tmp_path / "a.pub", tmp_path / "dir"))
    assert set(ring.trusted()) == {key_id(a.public_key()), key_id(b.public_key())}
    assert ring.has_trust() and not ring.signs


# ---- signatures ----

def _store(tmp: Path, ring: Keyring | None) -> Store:
    return Store(tmp / "store", ring)


def _edit(build: Build) -> None:
    path = build.path / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"bake_seconds": 1.0', b'"bake_seconds": 2.0'))


def _resign(build: Build, ring: Keyring) -> None:
    """Sign the build as it is now (its edited manifest becomes the signed one)."""
    sign_folder(build.path, ring)


def _forge_key_id(build: Build) -> None:
    sig = json.loads((build.path / SIGNATURE).read_text())
    sig["key_id"] = "0123456789abcdef"
    (build.path / SIGNATURE).write_text(json.dumps(sig))


def _resign_with_stranger_claiming_trusted_id(build: Build) -> None:
    sig = json.loads((build.path / SIGNATURE).read_text())
    stranger = Ed25519PrivateKey.generate()
    sig["signature"] = base64.b64encode(stranger.sign((build.path / "manifest.json").read_bytes())).decode()
    (build.path / SIGNATURE).write_text(json.dumps(sig))


def _sig_text(text: str) -> Callable[[Build], None]:
    return lambda build: (build.path / SIGNATURE).write_text(text)


SIG_CASES: list[tuple[str, Callable[[Build], None], str]] = [
    ("manifest edited after signing", _edit, "manifest signature does not verify (key KID): edited after signing?"),
    ("a byte appended to the manifest", lambda b: (b.path / "manifest.json").open("ab").write(b"\n"),
     "manifest signature does not verify (key KID)"),
    ("unknown key id", _forge_key_id, "signed by key 0123456789abcdef, which is not trusted here (trusted: KID)"),
    ("another key's signature under the trusted id", _resign_with_stranger_claiming_trusted_id,
     "manifest signature does not verify (key KID)"),
    ("signature file not JSON", _sig_text("garbage"), "manifest.json.sig is damaged"),
    ("signature not base64", _sig_text('{"algorithm": "ed25519", "key_id": "k", "signature": "!!"}'),
     "manifest.json.sig is damaged"),
    ("signature 63 bytes", _sig_text(json.dumps({"algorithm": "ed25519", "key_id": "k",
                                                 "signature": base64.b64encode(b"x" * 63).decode()})),
     "a 63-byte signature, not 64"),
    ("another algorithm", _sig_text('{"algorithm": "rsa", "key_id": "k", "signature": ""}'),
     "manifest.json.sig is damaged"),
    ("signature removed", lambda b: (b.path / SIGNATURE).unlink(),
     "build base/b1 is not signed, and this home trusts signing keys"),
]


@pytest.mark.parametrize("what, tamper, needle", SIG_CASES, ids=[c[0] for c in SIG_CASES])
def test_a_build_whose_signature_does_not_verify_is_refused(tmp_path, what, tamper, needle):
    ring = _keyring(tmp_path)
    kid = ring.signing_key()[0]
    build = make_build(_store(tmp_path, ring), "base", "b1")
    assert verify_build(build, ring) == kid  # good before
    tamper(build)
    with pytest.raises(SignatureError) as exc:
        verify_build(build, ring)
    assert needle.replace("KID", kid) in exc.value.message and exc.value.exit_code == 1
    assert exc.value.message.startswith("build base/b1")


def test_a_signed_build_names_its_key_and_its_bytes_and_id_are_those_of_an_unsigned_one(tmp_path):
    ring = _keyring(tmp_path)
    signed = make_build(_store(tmp_path / "a", ring), "base", "b1")
    plain = make_build(_store(tmp_path / "b", None), "base", "b1")
    assert json.loads((signed.path / SIGNATURE).read_text())["key_id"] == ring.signing_key()[0]
    assert not (plain.path / SIGNATURE).exists()
    for name in ("manifest.json", "vmlinuz", "initrd", "rootfs.squashfs"):
        assert (signed.path / name).read_bytes() == (plain.path / name).read_bytes(), name
    assert signed.build_id == plain.build_id


def test_a_commit_with_an_unusable_key_leaves_no_build_in_the_store(tmp_path):
    ring = _keyring(tmp_path)
    (ring.folder / SIGNING_KEY).chmod(0o644)
    store = _store(tmp_path, ring)
    with pytest.raises(KeyFileError):
        store.preflight()
    with pytest.raises(KeyFileError):
        make_build(store, "base", "b1")
    assert store.find("base", "b1") is None and store.builds("base") == []


def test_a_rotated_key_keeps_verifying_its_builds_and_a_running_reader_follows_rotation_and_removal(tmp_path):
    ring = _keyring(tmp_path)
    reader = Keyring(ring.folder)  # a long-running golden serve: reads trusted keys once
    old_build = make_build(_store(tmp_path, ring), "base", "b1")
    assert verify_build(old_build, reader) == ring.signing_key()[0]
    old, new = rotate_signing_key(ring)
    new_build = make_build(_store(tmp_path, ring), "base", "b2")
    assert verify_build(new_build, reader) == new  # unknown id: the key files are read again
    assert verify_build(old_build, reader) == old
    (ring.folder / "trusted" / f"{old}.pub").unlink()  # the operator stops trusting the old key
    with pytest.raises(SignatureError, match=f"signed by key {old}, which is not trusted here"):
        verify_build(old_build, reader)  # at once, in the running reader too


def test_a_configured_public_key_verifies_another_homes_builds(tmp_path):
    central = _keyring(tmp_path, "central")
    build = make_build(_store(tmp_path, central), "base", "b1")
    replica = Keyring(tmp_path / "replica" / "keys", (central.folder / SIGNING_PUB,))
    assert verify_build(build, replica) == central.signing_key()[0]
    stranger = Keyring(tmp_path / "stranger" / "keys", (_keyring(tmp_path, "other").folder / SIGNING_PUB,))
    with pytest.raises(SignatureError, match="which is not trusted here"):
        verify_build(build, stranger)


def test_unsigned_builds_pass_only_where_no_key_is_trusted_or_when_allowed(tmp_path):
    unsigned = make_build(_store(tmp_path, None), "base", "b1")
    assert verify_build(unsigned, None) is None
    assert verify_build(unsigned, Keyring(tmp_path / "nokeys" / "keys")) is None
    ring = _keyring(tmp_path)
    with pytest.raises(SignatureError, match="build base/b1 is not signed") as exc:
        verify_build(unsigned, ring)
    assert "golden keys sign-builds base" in str(exc.value.hint)
    assert verify_build(unsigned, ring, allow_unsigned=True) is None


def test_an_artifact_changed_after_the_bake_is_caught_against_the_manifest(tmp_path):
    build = make_build(_store(tmp_path, None), "base", "b1")
    check_artifacts(build)
    rootfs = build.path / "rootfs.squashfs"
    data = bytearray(rootfs.read_bytes())
    data[5000] ^= 1
    rootfs.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match=r"base/b1: rootfs\.squashfs does not match the sha256 its manifest names"):
        check_artifacts(build)


def test_sign_builds_signs_old_builds_once_and_refuses_a_tampered_one(tmp_path):
    old = _store(tmp_path, None)
    b1, b2 = make_build(old, "base", "b1"), make_build(old, "base", "b2")
    store = _store(tmp_path, _keyring(tmp_path))
    kid = store.keyring.signing_key()[0]  # type: ignore[union-attr]
    done = store.sign_builds(["base"])
    assert sorted((d.build_id, d.key_id, d.signed_now) for d in done) == [("b1", kid, True), ("b2", kid, True)]
    assert [d.signed_now for d in store.sign_builds([])] == [False, False]
    b3 = make_build(old, "base", "b3")
    (b3.path / "initrd").write_bytes(b"x" * 2000)  # same size, other bytes
    with pytest.raises(SignatureError, match="initrd does not match"):
        store.sign_builds(["base"])
    assert not (b3.path / SIGNATURE).exists()
    assert store.verify(b1) == kid and store.verify(b2) == kid


# ---- publish, promote, the boot server ----

@pytest.fixture
def signed(tmp_path: Path):
    ring = _keyring(tmp_path)
    store = _store(tmp_path, ring)
    db = SQLiteStateDB(tmp_path / "state.db")
    good, bad = make_build(store, "base", "b1"), make_build(store, "base", "b2", age_rank=1)
    return ring, store, db, good, bad


def test_publish_and_promote_refuse_an_edited_manifest_and_take_a_good_build(signed):
    ring, store, db, good, bad = signed
    _edit(bad)
    kid = ring.signing_key()[0]
    with pytest.raises(SignatureError, match=f"build base/b2: manifest signature does not verify \\(key {kid}\\)"):
        channels.publish(db, store, "base", "b2", "dev", user="t")
    with pytest.raises(SignatureError, match="build base/b2: manifest signature"):
        channels.publish(db, store, "base", "latest-bake", "dev", user="t", allow_unsigned=True)
    assert channels.channel_build(db, "base", "dev") is None
    assert channels.publish(db, store, "base", "b1", "dev", user="t").applied
    assert channels.promote(db, store, "base", "dev", "staging", user="t").change.to_build == "b1"
    # a build edited after it was published is refused at promote
    _edit(good)
    with pytest.raises(SignatureError, match="build base/b1: manifest signature does not verify"):
        channels.promote(db, store, "base", "dev", "prod", user="t")
    assert channels.channel_build(db, "base", "prod") is None
    # and at rollback: dev went b1 -> b2 (re-signed good) -> back to the edited b1 is refused
    (bad.path / SIGNATURE).unlink()
    _resign(bad, ring)
    assert channels.publish(db, store, "base", "b2", "dev", user="t").applied
    with pytest.raises(SignatureError, match="build base/b1: manifest signature does not verify"):
        channels.rollback(db, store, "base", "dev", user="t")
    assert channels.channel_build(db, "base", "dev") == "b2"


def test_publish_refuses_unsigned_unless_allowed_and_a_changed_artifact_always(signed):
    _ring, store, db, good, bad = signed
    (bad.path / SIGNATURE).unlink()
    with pytest.raises(SignatureError, match="build base/b2 is not signed"):
        channels.publish(db, store, "base", "b2", "dev", user="t")
    assert channels.publish(db, store, "base", "b2", "dev", user="t", allow_unsigned=True).applied
    with pytest.raises(SignatureError, match="is not signed"):
        channels.promote(db, store, "base", "dev", "staging", user="t")
    assert channels.promote(db, store, "base", "dev", "staging", user="t", allow_unsigned=True).applied
    (good.path / "vmlinuz").write_bytes(b"\0" * 3000)
    with pytest.raises(SignatureError, match="vmlinuz does not match the sha256"):
        channels.publish(db, store, "base", "b1", "prod", user="t")
    assert not isinstance(SignatureError("x"), GateError) and issubclass(SignatureError, GoldenError)


_get = http_get


def test_the_boot_server_refuses_a_build_edited_after_signing_and_says_why(signed, tmp_path, caplog):
    ring, store, db, _good, bad = signed
    channels.publish(db, store, "base", "b2", "dev", user="t")
    inventory = write_inventory(tmp_path / "inv.yml", {"node1": (MAC, "base@dev")})
    server = make_server("127.0.0.1:0", ServerConfig(fleet=Fleet(db, store, inventory), store=store, secret=b"s" * 64))
    start_in_thread(server)
    try:
        code, body = _get(server, f"/boot/{MAC}.ipxe")
        assert code == 200 and "kernel " in body.decode() and "golden.build=b2" in body.decode()
        sha = bad.manifest.artifacts["initrd"].sha256
        assert _get(server, "/store/base/b2/vmlinuz")[0] == 200 and _get(server, f"/a/{sha}")[0] == 200
        shutil.rmtree(bad.path / "logs")  # nothing to do with the signature: still served
        _edit(bad)  # while the server runs, with the build's files already checked and cached
        code, body = _get(server, f"/boot/{MAC}.ipxe")
        kid = ring.signing_key()[0]
        assert code == 200 and "kernel " not in body.decode() and "exit" in body.decode()
        assert _get(server, "/store/base/b2/vmlinuz")[0] == 404
        assert _get(server, f"/a/{sha}")[0] == 404
        assert _get(server, "/store/base/b1/vmlinuz")[0] == 200  # the good build's files still are
        why = f"build base/b2: manifest signature does not verify (key {kid}): edited after signing?"
        assert any(why in r.getMessage() and "node1" in r.getMessage() for r in caplog.records), caplog.text
        with db.read() as repo:
            assert repo.get_host("node1").served_build == "b2"  # from the first, good script only
    finally:
        server.shutdown()
        server.server_close()
