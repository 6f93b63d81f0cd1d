"""Who may read the fleet page: anyone only on a loopback listen address; elsewhere, whoever has the token.

The page lists every host, its BMC-facing state and drift, so a boot server reachable by the
racks must not hand it to them. With a token (``golden serve --fleet-token-file``), ``/fleet`` wants
it as ``Authorization: Bearer TOKEN`` or as the password of HTTP Basic (what a browser prompts for).
Without one, it is served only when the server listens on loopback (an admin address, reached
through SSH or a local proxy). Pure, so the decision is tested as a table.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from pathlib import Path

from toolkit.core.errors import InputError
from toolkit.core.secret import Secret

REALM = 'Basic realm="golden fleet", charset="UTF-8"'


def is_admin_address(host: str) -> bool:
    """True for a loopback address (or localhost): the fleet page needs no token there."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def presented_token(authorization: str | None) -> str | None:
    """The token in a Bearer header, or the password of a Basic one."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or None
    return None


def fleet_allowed(listen_host: str, token: Secret | None, authorization: str | None) -> bool:
    """Whether a request may read /fleet: with a token, only when it presents it; without one, only on loopback."""
    if token is None:
        return is_admin_address(listen_host)
    given = presented_token(authorization)
    return given is not None and hmac.compare_digest(given.encode(), token.reveal().encode())


def read_token_file(path: str) -> Secret:
    """The fleet token from its file (first line); never from argv, where ``ps`` would show it."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip().splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError):
        raise InputError(f"--fleet-token-file {path}: cannot read a token from it",
                         hint="write the token on the file's first line (chmod 600)") from None
    if len(token) < 16:
        raise InputError(f"--fleet-token-file {path}: the token is shorter than 16 characters",
                         hint="make one with: head -c 24 /dev/urandom | base64") from None
    return Secret(token)
