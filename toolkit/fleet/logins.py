"""Logins an agent reports (journal lines from sshd and login), parsed, and judged against break-glass grants. Pure.

The agent sends the lines as the journal holds them; parsing them here keeps the agent small and
lets one table of real log lines test every format. A login is *authorized* only when it used a
certificate whose serial is a grant issued for this host and the login happened while the grant
was valid; anything else (a standing key, a password, a console login, an unknown serial) taints
the host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from toolkit.state.db import GrantRow

_SSHD = re.compile(r"^Accepted (?P<method>\S+) for (?P<user>\S+) from (?P<addr>\S+) port \d+ [^:\s]+:?"
                   r"(?: (?P<keytype>\S+) (?P<fp>\S+))?(?P<rest>.*)$")
_CERT = re.compile(r" ID (?P<key_id>.*) \(serial (?P<serial>\d{1,19})\) CA ")
_ROOT_CONSOLE = re.compile(r"^ROOT LOGIN +(?:ON|on) +'?(?P<tty>[^' ]+)'?")
_USER_CONSOLE = re.compile(r"^LOGIN ON (?P<tty>\S+) BY (?P<user>\S+)")


@dataclass(frozen=True)
class Login:
    """A login on a host, as listings show it."""
    at: str  # as the agent sent it (ISO 8601)
    line: str
    user: str
    from_addr: str  # an address, or the terminal of a console login
    method: str  # certificate | publickey | password | console | <sshd's word>
    serial: int | None = None
    key_id: str = ""


def parse_login(at: str, line: str) -> Login:
    """One journal line as a Login; a line in no known format is kept as method "unknown"."""
    if m := _SSHD.match(line):
        method, serial, key_id = m["method"], None, ""
        if method == "publickey" and (c := _CERT.search(m["rest"] or "")) and (m["keytype"] or "").endswith("-CERT"):
            method, serial, key_id = "certificate", int(c["serial"]), c["key_id"]
        return Login(at, line, m["user"], m["addr"], method, serial, key_id)
    if m := _ROOT_CONSOLE.match(line):
        return Login(at, line, "root", m["tty"], "console")
    if m := _USER_CONSOLE.match(line):
        return Login(at, line, m["user"], m["tty"], "console")
    return Login(at, line, "?", "?", "unknown")


def _timestamp(at: str) -> float | None:
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def matching_grant(login: Login, host: str, grants: list[GrantRow]) -> GrantRow | None:
    """The grant this login used: a certificate serial issued for ``host``, used while it was valid."""
    if login.method != "certificate" or login.serial is None:
        return None
    when = _timestamp(login.at)
    for g in grants:
        if g.id == login.serial and g.host == host and when is not None and g.issued_at - 300 <= when <= g.expires_at:
            return g  # 300 s: the node's clock may run a little behind ours
    return None


def taint_reason(login: Login) -> str:
    """Why a login without a matching grant taints its host, in one line."""
    how = {"certificate": f"a certificate with serial {login.serial} that is no break-glass grant for this host",
           "publickey": "a standing SSH key", "password": "a password",
           "console": "the console"}.get(login.method, f"{login.method!r}")
    return f"{login.user} logged in from {login.from_addr} at {login.at} with {how}"
