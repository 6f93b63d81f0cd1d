"""Per-boot tokens (contract 4) and the server secret."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from toolkit.boot.token import (
    TokenClaims,
    TokenError,
    issue_token,
    load_or_create_secret,
    shared_secret,
    verify_token,
)
from toolkit.core.mac import MacError, normalize_mac

SECRET = b"x" * 64
MAC = "52:54:00:12:34:56"


def test_token_format_and_roundtrip():
    token = issue_token(SECRET, MAC, "b1", issued_at=1_800_000_000, attempt="0123456789abcdef")
    nonce, issued, attempt, sig = token.split(".")
    assert len(nonce) == 32 and issued == "1800000000" and attempt == "0123456789abcdef" and len(sig) == 64
    claims = verify_token(SECRET, token, MAC, "b1")
    assert claims == TokenClaims(nonce, 1_800_000_000, "0123456789abcdef")
    # The MAC may come in any spelling; the HMAC is over the normalized form.
    assert verify_token(SECRET, token, "52-54-00-12-34-56".upper(), "b1").nonce == nonce
    assert issue_token(SECRET, MAC, "b1").split(".")[2] == "-"  # not issued for a reimage attempt


def test_token_expires():
    token = issue_token(SECRET, MAC, "b1", issued_at=1000)
    assert verify_token(SECRET, token, MAC, "b1", now=1000 + 3600, ttl=3600).issued_at == 1000
    with pytest.raises(TokenError, match="expired") as err:
        verify_token(SECRET, token, MAC, "b1", now=1000 + 3601, ttl=3600)
    assert err.value.kind == "expired"


def test_attempt_is_signed():
    token = issue_token(SECRET, MAC, "b1", attempt="0123456789abcdef")
    nonce, issued, _, sig = token.split(".")
    for other in ("-", "fedcba9876543210"):
        with pytest.raises(TokenError, match="forged"):
            verify_token(SECRET, f"{nonce}.{issued}.{other}.{sig}", MAC, "b1")


def test_fresh_nonce_every_time():
    assert issue_token(SECRET, MAC, "b1") != issue_token(SECRET, MAC, "b1")


@pytest.mark.parametrize("mac, build, secret", [
    ("52:54:00:12:34:57", "b1", SECRET),   # another machine
    (MAC, "b2", SECRET),                   # another build
    (MAC, "b1", b"y" * 64),                # another server
])
def test_token_bound_to_mac_build_and_secret(mac, build, secret):
    token = issue_token(SECRET, MAC, "b1")
    with pytest.raises(TokenError):
        verify_token(secret, token, mac, build)


@pytest.mark.parametrize("token", [
    "", "abc", "a.b.c", "0" * 32 + ".1.-." + "g" * 64, "0" * 31 + ".1.-." + "0" * 64, "0" * 32 + "0" * 64,
    "0" * 32 + "." + "0" * 64, "0" * 32 + "." + "9" * 5000 + ".-." + "0" * 64, "0" * 32 + ".1.xyz." + "0" * 64,
    "0" * 32 + ".1.-." + "0" * 64 + "." + "0",
])
def test_malformed_tokens(token):
    with pytest.raises(TokenError, match="malformed"):
        verify_token(SECRET, token, MAC, "b1")


def test_forged_signature():
    nonce = "0" * 32
    with pytest.raises(TokenError, match="forged"):
        verify_token(SECRET, f"{nonce}.1.-.{'a' * 64}", MAC, "b1")


def test_normalize_mac():
    assert normalize_mac("525400ABCDEF") == "52:54:00:ab:cd:ef"
    with pytest.raises(MacError):
        normalize_mac("52:54:00:ab:cd")
    with pytest.raises(MacError):
        normalize_mac("../../etc/passwd")


def test_secret_created_once_0600(tmp_path: Path):
    home = tmp_path / "home"
    with ThreadPoolExecutor(8) as pool:
        secrets = list(pool.map(lambda _: load_or_create_secret(home), range(16)))
    assert len(set(secrets)) == 1
    path = home / "boot-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(home) == secrets[0]
    assert [p.name for p in home.iterdir()] == ["boot-secret"]  # no temp files left


def test_secret_readable_by_others_refused(tmp_path: Path):
    load_or_create_secret(tmp_path)
    os.chmod(tmp_path / "boot-secret", 0o644)
    with pytest.raises(TokenError, match="readable by others") as err:
        load_or_create_secret(tmp_path)
    assert err.value.hint and "chmod 600" in err.value.hint


def test_replicas_on_one_database_share_the_secret(state_backend, tmp_path: Path) -> None:
    # two replicas with homes of their own, one state database: a token one issued verifies at the other
    a, b = state_backend(), state_backend()
    first = shared_secret(a, tmp_path / "replica-a")
    assert shared_secret(b, tmp_path / "replica-b") == first
    token = issue_token(first, "52:54:00:00:00:01", "b1")
    assert verify_token(shared_secret(b, tmp_path / "replica-b"), token, "52:54:00:00:00:01", "b1").nonce


def test_an_existing_home_secret_seeds_the_database(state_backend, tmp_path: Path) -> None:
    home = tmp_path / "single"
    old = load_or_create_secret(home)
    assert shared_secret(state_backend(), home) == old  # tokens issued before the switch stay valid
    assert shared_secret(state_backend(), tmp_path / "other") == old
