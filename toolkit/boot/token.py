"""Per-boot tokens: ``<nonce>.<issued-at>.<attempt or ->.<HMAC>``.

The HMAC is hex HMAC-SHA256(secret, ``mac|image/build|nonce|issued|attempt``).

The boot server hands a fresh token to every machine in its iPXE script; the agent sends it
back with its report. Only someone who received that boot script can produce it; it binds the
report to the MAC, build and (during a reimage) the controller's attempt it was issued for, and
it expires ``ttl`` seconds after it was issued. Single use, the fetching address and contested
attempts are enforced by the caller against the state DB (``toolkit.boot.evidence``); this
module is pure apart from reading the secret (from the state database every replica shares, or
a file under the home).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.core.errors import GoldenError
from toolkit.core.fsutil import atomic_write
from toolkit.core.mac import normalize_mac

if TYPE_CHECKING:
    from toolkit.state.db import StateDB

SECRET_FILE = "boot-secret"  # noqa: S105 - a file name, not a secret
SECRET_BYTES = 32
NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
ATTEMPT_RE = re.compile(r"^[0-9a-f]{16}$")
DEFAULT_TTL_S = 4 * 3600.0


class TokenError(GoldenError):
    """A boot token is malformed, forged, expired, or bound to another machine or build."""

    def __init__(self, message: str, hint: str | None = None, *, kind: str = "malformed") -> None:
        super().__init__(message, hint)
        self.kind = kind  # malformed | forged | expired (a RejectKind value)


def load_or_create_secret(home: Path) -> bytes:
    """The server secret under ``home``; created once (0600), the same bytes for every later call."""
    path = home / SECRET_FILE
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    try:
        # exclusive: when another process won the race, everyone uses the winner's secret
        atomic_write(path, secrets.token_hex(SECRET_BYTES) + "\n", mode=0o600, exclusive=True)
    except FileExistsError:
        pass
    return _read_secret(path)


SHARED_SECRET_NAME = "boot-token-hmac"  # noqa: S105 - the name of a row, not a secret


def shared_secret(db: StateDB, home: Path) -> bytes:
    """The boot-token key every replica on this state database uses; created once, first writer wins.

    A home that already has a ``boot-secret`` file (a single server before it joined shared state)
    seeds the database with it, so the tokens it issued before stay valid.
    """
    with db.read() as repo:
        value = repo.get_secret(SHARED_SECRET_NAME)
    if value is None:
        seed = _read_secret(home / SECRET_FILE).decode() if (home / SECRET_FILE).exists() \
            else secrets.token_hex(SECRET_BYTES)
        with db.write() as repo:
            repo.create_secret(SHARED_SECRET_NAME, seed, time.time())
        with db.read() as repo:
            value = repo.get_secret(SHARED_SECRET_NAME)
    if value is None or len(value.strip()) < 32:
        raise TokenError(f"the state database ({db.where}) holds no usable boot-token secret",
                         hint="delete its shared_secrets row 'boot-token-hmac'; golden creates a new one")
    return value.strip().encode()


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise TokenError(f"{path} is readable by others (mode {mode:o})", hint=f"chmod 600 {path}")
    text = path.read_text().strip()
    if len(text) < 32:
        raise TokenError(f"{path} holds no usable secret", hint=f"remove {path}; golden creates a new one")
    return text.encode()


@dataclass(frozen=True)
class TokenClaims:
    """What a verified boot token says: its nonce, when it was issued, for which attempt."""
    nonce: str
    issued_at: int
    attempt: str  # "" when not issued for a reimage attempt


def _sign(secret: bytes, mac: str, build_id: str, nonce: str, issued_at: int, attempt: str, image: str) -> str:
    # the image is signed too, so a report cannot claim another image's name for the build it boots
    build = f"{image}/{build_id}" if image else build_id
    msg = f"{normalize_mac(mac)}|{build}|{nonce}|{issued_at}|{attempt}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def issue_token(secret: bytes, mac: str, build_id: str, nonce: str | None = None, *,
                issued_at: float | None = None, attempt: str = "", image: str = "") -> str:
    """A boot token binding ``mac``, ``build_id`` and ``image``, signed with ``secret``."""
    n = nonce if nonce is not None else secrets.token_hex(16)
    if not NONCE_RE.match(n):
        raise TokenError("a nonce is 32 lowercase hex digits")
    if attempt and not ATTEMPT_RE.match(attempt):
        raise TokenError("an attempt id is 16 lowercase hex digits")
    at = int(issued_at if issued_at is not None else time.time())
    return f"{n}.{at}.{attempt or '-'}.{_sign(secret, mac, build_id, n, at, attempt, image)}"


def verify_token(secret: bytes, token: str, mac: str, build_id: str, *, now: float | None = None,
                 ttl: float | None = None, image: str = "") -> TokenClaims:
    """The token's claims when we issued it for this MAC, image and build and it has not expired; else TokenError."""
    if not isinstance(token, str) or len(token) > 200 or token.count(".") != 3:
        raise TokenError("malformed token", kind="malformed")
    nonce, at_s, attempt, sig = token.split(".")
    attempt = "" if attempt == "-" else attempt
    if (not NONCE_RE.match(nonce) or not re.fullmatch(r"[0-9]{1,12}", at_s) or not re.fullmatch(r"[0-9a-f]{64}", sig)
            or (attempt and not ATTEMPT_RE.match(attempt))):
        raise TokenError("malformed token", kind="malformed")
    issued = int(at_s)
    if not hmac.compare_digest(sig, _sign(secret, mac, build_id, nonce, issued, attempt, image)):
        raise TokenError("token does not match this MAC, image and build (forged or issued for another boot)",
                         kind="forged")
    if ttl is not None and (now if now is not None else time.time()) - issued > ttl:
        raise TokenError(f"token expired (issued {int((now or time.time()) - issued)} s ago, lifetime {ttl:g} s)",
                         kind="expired")
    return TokenClaims(nonce, issued, attempt)
