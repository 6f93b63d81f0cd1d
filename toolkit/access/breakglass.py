"""Break-glass: sign a user's SSH key for one host and a short time, record the grant, taint the host.

The fleet's SSH user CA lives in the state home (``ssh-ca/breakglass_ca``, mode 0600, in a 0700
folder); it is made on first use with ``cryptography`` rather than ``ssh-keygen -N ''`` so no
passphrase option ever reaches a command line. Signing is ``ssh-keygen -s`` with the key's path:
the private key is never in argv, a log or an error. A certificate carries one principal,
``PRINCIPAL@MAC`` for the host's MAC, which is the only one a golden node accepts for root (the
hardening role writes it at boot), and its serial is the grant's id in the state database.

``plan_grant`` checks everything the user gave (pure); ``grant`` records, signs and taints in one
write transaction, so a grant is recorded exactly when its certificate exists.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.duration import format_duration
from toolkit.core.errors import CommandError, GoldenError, InputError
from toolkit.core.fsutil import atomic_write
from toolkit.core.mac import normalize_mac
from toolkit.core.run import require, run
from toolkit.fleet.fleet import Fleet
from toolkit.state.db import GrantRow

CA_DIR = "ssh-ca"
CA_KEY = "breakglass_ca"
DEFAULT_PRINCIPAL = "golden-breakglass"  # the hardening role's hardening_breakglass_principal
MIN_TTL_S, MAX_TTL_S = 1.0, 24 * 3600.0
MAX_PUBKEY_BYTES = 16 * 1024
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
_PUBKEY = re.compile(r"^(?P<type>[a-z0-9@.-]{1,64}) (?P<blob>[A-Za-z0-9+/]{16,8192}={0,3})(?: [^\x00-\x1f]{0,200})?$")
_PRINCIPAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class BreakGlassError(GoldenError):
    """Signing a break-glass certificate failed."""


@dataclass(frozen=True)
class GrantPlan:
    """A break-glass grant as planned: the host, its MAC and principal, who asks, why and for how long."""
    host: str
    mac: str
    principal: str  # PRINCIPAL@MAC, as the node accepts it
    user: str
    reason: str
    ttl_s: float
    pubkey: Path
    pubkey_line: str
    out: Path
    # what the certificate lets its holder do beyond a login: a terminal, unless more is asked for
    permits: tuple[str, ...] = ("permit-pty",)


# ssh-keygen -O extensions a break-glass certificate may carry (--permit); the rest are cleared
PERMITS = ("port-forwarding", "agent-forwarding", "X11-forwarding", "user-rc")


@dataclass(frozen=True)
class Granted:
    """A grant as recorded and signed: its row, the certificate file and the CA's public key."""
    grant: GrantRow
    certificate: Path
    ca_public_key: str


def ca_paths(home: Path) -> tuple[Path, Path]:
    """The break-glass CA's private and public key paths under ``home``."""
    return home / CA_DIR / CA_KEY, home / CA_DIR / f"{CA_KEY}.pub"


def ensure_ca(home: Path) -> str:
    """The CA's public key line, making the key pair on first use (private key 0600 in a 0700 folder)."""
    key, pub = ca_paths(home)
    if key.exists():
        if key.stat().st_mode & 0o077:
            raise InputError(f"the break-glass CA key {key} is readable by others",
                             hint=f"chmod 600 {key} (and check who has read it)")
        return pub.read_text().strip()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(key.parent, 0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    line = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode() + " golden-breakglass-ca"
    atomic_write(pub, line + "\n", mode=0o644)
    atomic_write(key, pem, mode=0o600, exclusive=True)
    return line


def read_pubkey(path: Path) -> str:
    """The one public key line in ``path``; InputError saying what is wrong otherwise."""
    try:
        st = path.stat()
        if not path.is_file() or st.st_size > MAX_PUBKEY_BYTES:
            raise InputError(f"--pubkey {path}: expected an SSH public key file (one line, under 16 KiB)")
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--pubkey {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    if "PRIVATE KEY" in text:
        raise InputError(f"--pubkey {path} is a private key", hint="pass the .pub file; the private key stays with you")
    lines = [x for x in text.splitlines() if x.strip()]
    m = _PUBKEY.fullmatch(lines[0].strip()) if len(lines) == 1 else None
    if m is None or m["type"] not in KEY_TYPES:
        raise InputError(f"--pubkey {path}: expected one OpenSSH public key line like 'ssh-ed25519 AAAA... you@laptop'")
    return lines[0].strip()


def check_reason(reason: str) -> str:
    """The reason, stripped; InputError unless it is one printable line of 1 to 500 characters."""
    reason = reason.strip()
    if not reason or len(reason) > 500 or not reason.isprintable():
        raise InputError("--reason must say why in one line of 1 to 500 printable characters",
                         hint='e.g. --reason "INC-1234: disk full on node7, need to look"')
    return reason


def check_principal(principal: str) -> str:
    """The principal; InputError unless it is a plain name (it reaches ssh-keygen's argv)."""
    if not _PRINCIPAL.fullmatch(principal):
        raise InputError(f"--principal must be a name of letters, digits, '.', '_' and '-', got {principal[:80]!r}")
    return principal


def plan_grant(fleet: Fleet, host: str, user: str, reason: str, ttl_s: float, pubkey: Path,
               principal: str = DEFAULT_PRINCIPAL, out: Path | None = None, permits: tuple[str, ...] = ()) -> GrantPlan:
    """Everything checked before anything is recorded or signed."""
    if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        raise InputError(f"--ttl must be between 1s and 24h, got {format_duration(ttl_s)}")
    found = fleet.host_by_name(host)
    if found is None or not found.mac:
        raise InputError(f"host {host!r} is not in the inventory with a mac",
                         hint="golden fleet lists the hosts; break-glass needs the MAC the node boots with")
    line = read_pubkey(pubkey)
    mac = normalize_mac(found.mac)
    cert = out or pubkey.with_name(pubkey.name.removesuffix(".pub") + "-cert.pub")
    if cert.is_dir() or not cert.parent.is_dir():
        raise InputError(f"--out {cert}: expected a file in an existing folder")
    extra = tuple(p for p in permits if p in PERMITS)
    if len(extra) != len(permits):
        raise InputError(f"--permit takes {', '.join(PERMITS)}; got {', '.join(sorted(set(permits) - set(PERMITS)))}")
    return GrantPlan(found.name, mac, f"{check_principal(principal)}@{mac}", user, check_reason(reason), ttl_s,
                     pubkey, line, cert, ("permit-pty", *(f"permit-{p}" for p in extra)))


def _fingerprint(pub: Path) -> str:
    try:
        words = run([require("ssh-keygen", "openssh-client"), "-l", "-f", pub], capture=True,
                    what="ssh-keygen -l").stdout.split()
    except CommandError:
        raise InputError(f"--pubkey {pub}: ssh-keygen cannot read it as a public key",
                         hint="pass the .pub file ssh-keygen made, e.g. ~/.ssh/id_ed25519.pub") from None
    return words[1] if len(words) > 1 else "?"


def _sign(ca_key: Path, plan: GrantPlan, serial: int, key_id: str) -> str:
    """The certificate text for the plan's key, signed by the CA at ``ca_key`` (a path, never the key)."""
    work = Path(tempfile.mkdtemp(prefix="golden-breakglass-"))
    try:
        pub = work / "key.pub"
        pub.write_text(plan.pubkey_line + "\n")
        try:
            options = ["-O", "clear", *(arg for p in plan.permits for arg in ("-O", p))]
            run([require("ssh-keygen", "openssh-client"), "-q", "-s", ca_key, "-I", key_id, "-n", plan.principal,
                 "-z", str(serial), "-V", f"-1m:+{int(plan.ttl_s)}", *options, pub], capture=True,
                what="ssh-keygen -s")
        except CommandError as exc:
            raise BreakGlassError(f"signing the break-glass certificate failed: {exc.message}",
                                  hint="check the CA key under the state home (ssh-ca/) and the public key") from None
        return (work / "key-cert.pub").read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def grant(fleet: Fleet, home: Path, plan: GrantPlan, now: float | None = None) -> Granted:
    """Record the grant, sign its certificate, write it to ``plan.out``, taint the host: all or nothing."""
    ca_public = ensure_ca(home)
    ca_key, _ = ca_paths(home)
    now = time.time() if now is None else now
    fingerprint = _fingerprint(plan.pubkey)
    with fleet.db.write() as repo:
        serial = repo.add_grant(plan.host, plan.mac, plan.principal, plan.user, plan.reason, now, now + plan.ttl_s,
                                fingerprint, "")
        key_id = f"golden-breakglass:{plan.host}:{plan.user}:{serial}"
        certificate = _sign(ca_key, plan, serial, key_id)
        atomic_write(plan.out, certificate, mode=0o644)
        repo.set_grant_key_id(serial, key_id)
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + plan.ttl_s))
        detail = (f"serial {serial}, principal {plan.principal}, key {fingerprint}, "
                  f"ttl {format_duration(plan.ttl_s)}, expires {until}")
        repo.add_audit(now, plan.user, "break-glass", plan.host, plan.reason, detail)
        repo.add_event("break-glass", now, plan.mac, plan.host, None, detail)
        running = repo.get_host(plan.host)  # the taint ends with a reimage or a boot of another build
        repo.taint_host(plan.host, now, running.observed_build if running else None, "break-glass",
                        f"break-glass grant {serial} to {plan.user}: {plan.reason}")
        row = repo.get_grant(serial)
    assert row is not None
    return Granted(row, plan.out, ca_public)


def list_grants(fleet: Fleet, host: str | None = None) -> list[GrantRow]:
    """The break-glass grants, newest first, of one host or all."""
    with fleet.db.read() as repo:
        return repo.list_grants(host)
