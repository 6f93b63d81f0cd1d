"""Signed builds: a detached Ed25519 signature over a build's ``manifest.json``, and the check every
consumer of a build (publish, promote, ``golden serve``, the artifacts a site cache fetches) runs on it.

The manifest names every artifact's sha256, so a good signature vouches for every byte of the build.
``manifest.json.sig`` is JSON: ``{"schema": 1, "algorithm": "ed25519", "key_id": ..., "signature":
base64}``; the signed message is ``DOMAIN`` followed by the manifest's exact bytes (the domain keeps a
signature over a manifest from passing for a signature over anything else golden may sign later).

Policy, when the home trusts any key (``Keyring.has_trust``): a build must carry a signature by a
trusted key that verifies over its manifest as stored. An unsigned build is refused unless the caller
allows it (``golden publish --allow-unsigned``); ``golden keys sign-builds`` signs builds made before the
home had keys, after checking their artifacts against the manifest. A home that trusts no key checks
nothing (as before signing existed): a signature nobody is configured to check proves nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature

from toolkit.core.errors import GoldenError
from toolkit.core.fsutil import atomic_write, sha256_file
from toolkit.image.manifest import Manifest
from toolkit.trust.keys import Keyring

SIGNATURE = "manifest.json.sig"
MANIFEST = "manifest.json"
DOMAIN = b"golden build manifest v1\n"
MAX_SIG_BYTES = 4096


class Build(Protocol):
    """What is checked of a stored build (toolkit.store.artifacts.Build, a stage above)."""
    @property
    def image(self) -> str: ...
    @property
    def build_id(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def manifest(self) -> Manifest: ...


class SignatureError(GoldenError):
    """A build's signature is missing, damaged, by an untrusted key, or does not verify (exit 1)."""


@dataclass(frozen=True)
class Signature:
    """A detached manifest signature: which key made it, and the 64 signature bytes."""
    key_id: str
    signature: bytes

    def to_json(self) -> str:
        """The signature file's text."""
        return json.dumps({"schema": 1, "algorithm": "ed25519", "key_id": self.key_id,
                           "signature": base64.b64encode(self.signature).decode()}, indent=2, sort_keys=True) + "\n"


def parse_signature(text: bytes, where: str) -> Signature:
    """The signature in a ``manifest.json.sig``'s bytes; SignatureError naming ``where`` when damaged."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("algorithm") != "ed25519":
            raise ValueError("not an ed25519 signature record")
        kid, sig = str(data["key_id"]), base64.b64decode(str(data["signature"]), validate=True)
    except (ValueError, KeyError, binascii.Error):
        raise SignatureError(f"{where}: {SIGNATURE} is damaged (not a golden signature record)",
                             hint="sign the build again: golden keys sign-builds") from None
    if len(sig) != 64:
        raise SignatureError(f"{where}: {SIGNATURE} is damaged (a {len(sig)}-byte signature, not 64)")
    return Signature(kid, sig)


def sign_folder(folder: Path, keyring: Keyring) -> Signature:
    """Sign ``folder``'s manifest.json with the home's signing key and write ``manifest.json.sig`` beside it."""
    kid, key = keyring.signing_key()
    sig = Signature(kid, key.sign(DOMAIN + (folder / MANIFEST).read_bytes()))
    atomic_write(folder / SIGNATURE, sig.to_json())
    return sig


def _read_signature(folder: Path, where: str) -> Signature | None:
    path = folder / SIGNATURE
    try:
        if path.stat().st_size > MAX_SIG_BYTES:
            raise SignatureError(f"{where}: {SIGNATURE} is damaged ({path.stat().st_size} bytes)")
        return parse_signature(path.read_bytes(), where)
    except FileNotFoundError:
        return None


def check_signature(folder: Path, where: str, keyring: Keyring) -> str | None:
    """The id of the trusted key whose signature over ``folder``'s manifest verifies; None for an unsigned
    build; SignatureError for a damaged signature, an untrusted key or a manifest changed since signing."""
    sig = _read_signature(folder, where)
    if sig is None:
        return None
    public = keyring.lookup(sig.key_id)
    if public is None:
        known = ", ".join(sorted(keyring.trusted())) or "none"
        raise SignatureError(f"{where}: signed by key {sig.key_id}, which is not trusted here (trusted: {known})",
                             hint="add its public key to trust.public_keys in golden.yaml, or to <home>/keys/trusted/")
    try:
        public.verify(sig.signature, DOMAIN + (folder / MANIFEST).read_bytes())
    except InvalidSignature:
        raise SignatureError(f"{where}: manifest signature does not verify (key {sig.key_id}): edited after signing?",
                             hint="bake it again; never edit a stored build") from None
    return sig.key_id


def verify_build(build: Build, keyring: Keyring | None, *, allow_unsigned: bool = False) -> str | None:
    """The trusted key id that signed ``build`` (None: unsigned and allowed, or nothing to check against);
    SignatureError when this home may not use it."""
    if keyring is None or not keyring.has_trust():
        return None
    where = f"build {build.image}/{build.build_id}"
    kid = check_signature(build.path, where, keyring)
    if kid is None and not allow_unsigned:
        raise SignatureError(f"{where} is not signed, and this home trusts signing keys",
                             hint=f"sign it (golden keys sign-builds {build.image}) or publish it with "
                                  "--allow-unsigned")
    return kid


def check_artifacts(build: Build) -> None:
    """SignatureError when an artifact's bytes are not those the manifest names (size, then sha256)."""
    for name, art in sorted(build.manifest.artifacts.items()):
        path = build.path / name
        size = path.stat().st_size if path.is_file() else -1
        if size != art.size or sha256_file(path) != art.sha256:
            raise SignatureError(f"build {build.image}/{build.build_id}: {name} does not match the sha256 its "
                                 "manifest names (changed after the bake?)", hint="bake it again")


@dataclass(frozen=True)
class SignedBuild:
    """A build ``golden keys sign-builds`` looked at: signed now, or already signed by ``key_id``."""
    image: str
    build_id: str
    key_id: str
    signed_now: bool


def sign_build(build: Build, keyring: Keyring) -> SignedBuild:
    """Sign a build made before the home had keys, after checking its artifacts against its manifest; a build
    already signed is checked, not signed again (a signature that does not verify is an error)."""
    where = f"build {build.image}/{build.build_id}"
    kid = check_signature(build.path, where, keyring)
    if kid is not None:
        return SignedBuild(build.image, build.build_id, kid, False)
    check_artifacts(build)
    return SignedBuild(build.image, build.build_id, sign_folder(build.path, keyring).key_id, True)

