"""Per-boot tokens: ``<nonce>.<hex HMAC-SHA256(secret, mac|build_id|nonce)>``.

The boot server hands a fresh token to every machine in its iPXE script; the agent sends it
back with its report. Only someone who received that boot script can produce it, and it
binds the report to the MAC and build it was issued for. Single use is enforced by the
caller (the state DB records used nonces); this module is pure apart from the secret file.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from toolkit.core.errors import GoldenError
from toolkit.core.fsutil import atomic_write
from toolkit.core.mac import normalize_mac

SECRET_FILE = "boot-secret"  # noqa: S105 - a file name, not a secret
SECRET_BYTES = 32
NONCE_RE = re.compile(r"^[0-9a-f]{32}$")


class TokenError(GoldenError):
    """A boot token is malformed, forged, or bound to another machine or build."""


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


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise TokenError(f"{path} is readable by others (mode {mode:o})", hint=f"chmod 600 {path}")
    text = path.read_text().strip()
    if len(text) < 32:
        raise TokenError(f"{path} holds no usable secret", hint=f"remove {path}; golden creates a new one")
    return text.encode()


def _sign(secret: bytes, mac: str, build_id: str, nonce: str) -> str:
    msg = f"{normalize_mac(mac)}|{build_id}|{nonce}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def issue_token(secret: bytes, mac: str, build_id: str, nonce: str | None = None) -> str:
    n = nonce if nonce is not None else secrets.token_hex(16)
    if not NONCE_RE.match(n):
        raise TokenError("a nonce is 32 lowercase hex digits")
    return f"{n}.{_sign(secret, mac, build_id, n)}"


def verify_token(secret: bytes, token: str, mac: str, build_id: str) -> str:
    """Return the token's nonce when it was issued by us for this MAC and build; TokenError otherwise."""
    if not isinstance(token, str) or token.count(".") != 1:
        raise TokenError("malformed token")
    nonce, mac_hex = token.split(".")
    if not NONCE_RE.match(nonce) or not re.fullmatch(r"[0-9a-f]{64}", mac_hex):
        raise TokenError("malformed token")
    if not hmac.compare_digest(mac_hex, _sign(secret, mac, build_id, nonce)):
        raise TokenError("token does not match this MAC and build (forged or issued for another boot)")
    return nonce
