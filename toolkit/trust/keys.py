"""The fleet's keys in the state home: the Ed25519 key that signs builds, the public keys trusted to
have signed them, rotation, and the kinds of key ``golden keys init`` creates.

Layout of ``<home>/keys``::

    signing.key        the private key that signs new builds (PEM PKCS#8, unencrypted, mode 0600)
    signing.pub        its public key (PEM)
    trusted/<id>.pub   every public key this home trusts: the signing key's and each rotated-out one's
    ledger.json        when each key was made and rotated out (shown by ``golden keys list``; trust
                       is decided by the files above, never by the ledger)

A key id is the first 16 hex digits of the SHA-256 of the raw 32-byte public key (its fingerprint).
golden.yaml's ``trust: {public_keys: [...]}`` adds public keys made elsewhere (files, or folders of
``*.pub``): a replica or a site's boot server trusts the central signing key without holding it.

The private key is only ever read here, from a 0600 file; it never reaches argv, a log line or an
error message (errors name the file, never its bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict

from toolkit.core.errors import InputError
from toolkit.core.fsutil import atomic_write

KEYS_DIR = "keys"
SIGNING_KEY = "signing.key"
SIGNING_PUB = "signing.pub"
TRUSTED_DIR = "trusted"
LEDGER = "ledger.json"
MAX_KEY_BYTES = 64 * 1024  # a PEM Ed25519 key is ~120 bytes: anything this big is not one


class KeyFileError(InputError):
    """A key file is missing, too open, of the wrong type or damaged (exit 2); the message names the file."""


class TrustConfig(BaseModel):
    """``trust:`` in golden.yaml: public keys trusted besides the home's own (files or folders of ``*.pub``)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    public_keys: list[str] = []


def key_id(public: Ed25519PublicKey) -> str:
    """The key's fingerprint: the first 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _kind(key: object) -> str:
    """A key's algorithm as people name it: RSA, EllipticCurve, Ed448, ..."""
    return type(key).__name__.lstrip("_").removesuffix("PrivateKey").removesuffix("PublicKey")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- reading key files ----

def _regular_file(path: Path, what: str, hint: str) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: the {what} is missing", hint=hint) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: the {what} is not a regular file", hint="point golden at a PEM key file")
    if st.st_size > MAX_KEY_BYTES:
        raise KeyFileError(f"{path}: the {what} is {st.st_size} bytes, not a PEM Ed25519 key")
    return st


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path``; KeyFileError when it is missing, readable by group or others,
    not a regular file, not a PEM key (truncated, damaged, passphrase-protected) or not Ed25519."""
    st = _regular_file(path, "signing key", "restore it from backup, or make a new one: golden keys rotate")
    if st.st_mode & 0o077:
        raise KeyFileError(f"{path}: the signing key is readable by group or others (mode "
                           f"{stat.S_IMODE(st.st_mode):04o}); golden uses a private key only from a 0600 file",
                           hint=f"chmod 600 {path}, or rotate the key if others may have read it")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise KeyFileError(f"{path}: the signing key is protected by a passphrase",
                           hint="golden needs an unencrypted PEM key in a 0600 file") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path}: the signing key is not a PEM private key (truncated or damaged?)",
                           hint="restore it from backup, or rotate: golden keys rotate") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: the signing key is of type {_kind(key)}, not Ed25519",
                           hint="golden signs with Ed25519: golden keys init makes one")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in ``path`` (PEM, or one OpenSSH ``ssh-ed25519`` line); KeyFileError otherwise."""
    _regular_file(path, "public key", "check trust.public_keys in golden.yaml, or run: golden keys init")
    data = path.read_bytes()
    key: object
    try:
        if data.lstrip().startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(data.strip())
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path}: not a PEM (or ssh-ed25519) public key (truncated or damaged?)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: the public key is of type {_kind(key)}, not Ed25519")
    return key


def _public_files(source: Path) -> list[Path]:
    """A configured entry: a file, or a folder whose ``*.pub`` files are read."""
    if source.is_dir():
        return sorted(source.glob("*.pub"))
    return [source]


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None  # loading it says why
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# ---- the keyring a home works with ----

@dataclass
class Keyring:
    """The keys of a home (``<home>/keys``) plus the configured extra public keys.

    Trusted keys are read on first use and again when their files change."""

    folder: Path
    extra: tuple[Path, ...] = ()
    _trusted: dict[str, Ed25519PublicKey] | None = field(default=None, repr=False)
    _stamp: tuple[object, ...] = field(default=(), repr=False)

    @property
    def signs(self) -> bool:
        """Whether this home signs what it bakes (``golden keys init`` made ``signing.pub``)."""
        return (self.folder / SIGNING_PUB).is_file()

    def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        """The key id and private key that sign new builds; KeyFileError when the file is unusable."""
        key = load_private_key(self.folder / SIGNING_KEY)
        return key_id(key.public_key()), key

    def trusted(self) -> dict[str, Ed25519PublicKey]:
        """Key id -> public key, for every key this home trusts; read again whenever a key file was added,
        removed or replaced (a running ``golden serve`` follows rotation and removal without a restart)."""
        files = self.trusted_files()
        stamp = tuple((str(p), _file_stamp(p)) for p in files)
        if self._trusted is None or stamp != self._stamp:
            found: dict[str, Ed25519PublicKey] = {}
            for path in files:
                public = load_public_key(path)
                found[key_id(public)] = public
            self._trusted, self._stamp = found, stamp
        return self._trusted

    def trusted_files(self) -> list[Path]:
        """The public key files trust is read from: the home's own, then the configured ones."""
        own = [self.folder / SIGNING_PUB] if self.signs else []
        home = sorted((self.folder / TRUSTED_DIR).glob("*.pub")) if (self.folder / TRUSTED_DIR).is_dir() else []
        return own + home + [p for src in self.extra for p in _public_files(src)]

    def forget(self) -> None:
        """Read the key files again on next use (after init or rotate changed them)."""
        self._trusted = None

    def has_trust(self) -> bool:
        """Whether any public key is trusted: then builds must carry a good signature."""
        return bool(self.trusted_files())

    def lookup(self, kid: str) -> Ed25519PublicKey | None:
        """The trusted key with id ``kid``, or None."""
        return self.trusted().get(kid)


def open_keyring(home: Path, project: Path, config: object = None) -> Keyring:
    """The keyring of ``home``; ``config``: golden.yaml's ``trust:`` section (relative paths from ``project``)."""
    cfg = TrustConfig.model_validate(config or {})
    extra = tuple(p if p.is_absolute() else project / p for p in map(Path, cfg.public_keys))
    return Keyring(home / KEYS_DIR, extra)


# ---- making and rotating keys ----

@dataclass(frozen=True)
class KeyInfo:
    """One key as ``golden keys list`` shows it."""
    key_id: str
    kind: str  # signing | trusted (a rotated-out or configured public key)
    created: str  # "" when unknown (a key made elsewhere)
    signs: bool  # the key that signs new builds
    path: str  # the public key file


def _ledger(folder: Path) -> dict[str, dict[str, str]]:
    path = folder / LEDGER
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _note(folder: Path, kid: str, **fields: str) -> None:
    ledger = _ledger(folder)
    ledger.setdefault(kid, {}).update(fields)
    atomic_write(folder / LEDGER, json.dumps(ledger, indent=2, sort_keys=True) + "\n")


def _write_signing_key(folder: Path) -> str:
    """A new signing key: private 0600 (never group- or world-readable, not even for a moment), public beside it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        for path in (folder.parent, folder):  # the home, as other verbs make it: never its missing parents
            path.mkdir(exist_ok=True, mode=0o700)
    except FileNotFoundError:
        raise KeyFileError(f"cannot create {folder}: {folder.parent.parent} does not exist",
                           hint="create the parent folder, or pass an existing --home") from None
    (folder / TRUSTED_DIR).mkdir(exist_ok=True)
    kid = key_id(key.public_key())
    atomic_write(folder / TRUSTED_DIR / f"{kid}.pub", _pem(key.public_key()))
    atomic_write(folder / SIGNING_KEY, pem, mode=0o600)
    atomic_write(folder / SIGNING_PUB, _pem(key.public_key()))
    _note(folder, kid, created=_now())
    return kid


@dataclass(frozen=True)
class KeyKind:
    """A kind of key ``golden keys init`` makes. ``exists(folder)`` says whether the home has it;
    ``create(folder)`` makes it and returns the ids (or names) of what it made. Other stages add
    their kinds with ``register_kind`` (the Secure Boot hierarchy: PK, KEK, db)."""
    name: str
    describe: str
    exists: Callable[[Path], bool]
    create: Callable[[Path], list[str]]


# The kinds `golden keys init` creates, in order; init makes each one the home lacks.
KEY_KINDS: list[KeyKind] = [
    KeyKind("signing", "Ed25519 key that signs every build's manifest",
            exists=lambda folder: (folder / SIGNING_KEY).exists() or (folder / SIGNING_PUB).exists(),
            create=lambda folder: [_write_signing_key(folder)]),
    # Late imports: toolkit.trust.secureboot reads KEYS_DIR from this module.
    KeyKind("secureboot", "UEFI Secure Boot PK, KEK and db for the lab; db signs UKIs and iPXE",
            exists=lambda folder: _secureboot().complete(folder / _secureboot().SB_DIR),
            create=lambda folder: _secureboot().init_in(folder / _secureboot().SB_DIR)),
]


def _secureboot() -> Any:
    from toolkit.trust import secureboot
    return secureboot


def register_kind(kind: KeyKind) -> None:
    """Add a kind of key to ``golden keys init`` (replacing one of the same name)."""
    KEY_KINDS[:] = [k for k in KEY_KINDS if k.name != kind.name] + [kind]


@dataclass(frozen=True)
class InitResult:
    """What ``golden keys init`` did for one kind of key."""
    kind: str
    created: bool  # False: the home already had it
    ids: list[str]


def init_keys(keyring: Keyring, only: Collection[str] | None = None) -> list[InitResult]:
    """Make every kind of key (or those named in ``only``) the home lacks; a kind it has is left alone (init
    is safe to run again)."""
    out = []
    for kind in (k for k in KEY_KINDS if only is None or k.name in only):
        if kind.exists(keyring.folder):
            out.append(InitResult(kind.name, False, []))
        else:
            out.append(InitResult(kind.name, True, kind.create(keyring.folder)))
    keyring.forget()
    return out


def rotate_signing_key(keyring: Keyring) -> tuple[str, str]:
    """A new signing key; the old one's public key stays in ``trusted/`` (old builds keep verifying) and
    its private key is deleted (it signs nothing again). The (old, new) key ids."""
    if not keyring.signs:
        raise KeyFileError(f"{keyring.folder}: this home has no signing key to rotate", hint="run: golden keys init")
    # the old id from its public key: rotating is also the way out of a lost, damaged or too open private key
    old = key_id(load_public_key(keyring.folder / SIGNING_PUB))
    new = _write_signing_key(keyring.folder)
    _note(keyring.folder, old, rotated_out=_now())
    keyring.forget()
    return old, new


def list_keys(keyring: Keyring) -> list[KeyInfo]:
    """Every trusted key, the signing one first; KeyFileError when a trusted key file is unusable."""
    ledger = _ledger(keyring.folder)
    current = key_id(load_public_key(keyring.folder / SIGNING_PUB)) if keyring.signs else None
    seen: dict[str, KeyInfo] = {}
    for path in keyring.trusted_files():
        kid = key_id(load_public_key(path))
        if kid not in seen:
            seen[kid] = KeyInfo(kid, "signing" if kid == current else "trusted",
                                ledger.get(kid, {}).get("created", ""), kid == current, str(path))
    return sorted(seen.values(), key=lambda k: (not k.signs, k.created == "", k.created), reverse=False)
