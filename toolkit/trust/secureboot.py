"""UEFI Secure Boot keys: the lab's PK/KEK/db hierarchy, the db key that signs boot images, enrolment.

``golden keys init`` makes a self-signed PK, KEK and db (X.509 certificate + 0600 private key each) in
``<home>/keys/secureboot``; a bake signs its Unified Kernel Image with the db key whenever one is
found, and the lab enrols all three into each Secure Boot machine's OVMF variable store. Production
sites sign with their own db key: ``secure_boot: {db_key: FILE, db_cert: FILE}`` in golden.yaml
(their PK/KEK stay with them). Private keys only ever travel as file paths: never in argv text,
logs or messages.
"""

from __future__ import annotations

import os
import stat
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from toolkit.core.config import Settings
from toolkit.core.errors import CommandError, InputError
from toolkit.core.run import require, run
from toolkit.trust.keys import KEYS_DIR

SB_DIR = "secureboot"  # under the home's keys folder
HIERARCHY = ("PK", "KEK", "db")  # each certifies the next in UEFI's model; self-signed here, as for a lab
OWNER_FILE = "owner.guid"  # the signature owner GUID the enrolled certificates carry
VALID_DAYS = "3650"


class SecureBootConfig(BaseModel):
    """golden.yaml's ``secure_boot:`` section: the site's own db key and certificate (PEM files)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    db_key: str | None = None
    db_cert: str | None = None


@dataclass(frozen=True)
class DbKey:
    """The key that signs boot images and the certificate firmware checks them against."""
    key: Path
    cert: Path


@dataclass(frozen=True)
class Hierarchy:
    """golden's own PK/KEK/db (lab machines enrol it); ``db`` signs."""
    folder: Path
    owner: str

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    @property
    def db(self) -> DbKey:
        return DbKey(self.key("db"), self.cert("db"))


def keys_dir(settings: Settings) -> Path:
    """Where ``golden keys init`` keeps the Secure Boot hierarchy."""
    return settings.home / KEYS_DIR / SB_DIR


def init_hierarchy(settings: Settings) -> tuple[Hierarchy, list[str]]:
    """Make whatever of PK, KEK and db is missing (an existing key is never replaced); what was made."""
    folder = keys_dir(settings)
    made = init_in(folder)
    return Hierarchy(folder, (folder / OWNER_FILE).read_text().strip()), made


def init_in(folder: Path) -> list[str]:
    """In ``folder``: the owner GUID and whatever of PK, KEK and db is missing; the names made."""
    require("openssl")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner = folder / OWNER_FILE
    if not owner.exists():
        owner.write_text(f"{uuid.uuid4()}\n")
    return [name for name in HIERARCHY if _make_pair(folder, name)]


def complete(folder: Path) -> bool:
    """Whether ``folder`` holds the whole hierarchy (``golden keys init`` then leaves it alone)."""
    return (folder / OWNER_FILE).exists() and all(
        (folder / f"{name}.{ext}").exists() for name in HIERARCHY for ext in ("key", "crt"))


def _make_pair(folder: Path, name: str) -> bool:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    if key.exists() and cert.exists():
        return False
    tmp_key = folder / f".{name}.key.tmp"
    tmp_key.unlink(missing_ok=True)
    # Created 0600 before openssl writes into it: the key is never readable by others, even briefly.
    os.close(os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", VALID_DAYS,
         "-subj", f"/CN=golden Secure Boot {name}/", "-keyout", tmp_key, "-out", cert],
        capture=True, what=f"openssl (Secure Boot {name})")
    tmp_key.rename(key)
    return True


def hierarchy(settings: Settings) -> Hierarchy | None:
    """golden's own hierarchy when ``golden keys init`` made one, checked; else None."""
    folder = keys_dir(settings)
    if not (folder / OWNER_FILE).exists():
        return None
    h = Hierarchy(folder, (folder / OWNER_FILE).read_text().strip())
    for name in HIERARCHY:
        check_key_file(h.key(name), f"Secure Boot {name} key")
        check_cert_file(h.cert(name), f"Secure Boot {name} certificate")
    return h


def db_key(settings: Settings) -> DbKey | None:
    """The key that signs boot images: golden.yaml's ``secure_boot:`` files, else golden's own db; None: no
    Secure Boot signing in this home."""
    cfg = SecureBootConfig.model_validate(settings.extra.get("secure_boot") or {})
    if cfg.db_key or cfg.db_cert:
        if not (cfg.db_key and cfg.db_cert):
            raise InputError("golden.yaml secure_boot: needs both db_key and db_cert",
                             hint="name the PEM private key and the certificate firmware has in its db")
        key, cert = (settings.project / p if not Path(p).is_absolute() else Path(p) for p in (cfg.db_key, cfg.db_cert))
        check_key_file(key, "secure_boot.db_key")
        check_cert_file(cert, "secure_boot.db_cert")
        return DbKey(key, cert)
    own = hierarchy(settings)
    return own.db if own is not None else None


def check_key_file(path: Path, what: str) -> None:
    """InputError unless ``path`` is a private key file only its owner can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist", hint="run golden keys init, or fix the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {path} is not a file")
    if st.st_mode & 0o077:
        raise InputError(f"{what} {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o})",
                         hint=f"chmod 600 {path}")
    head = path.read_bytes()[:64]
    if b"-----BEGIN" not in head or b"PRIVATE KEY" not in head:
        raise InputError(f"{what} {path} is not a PEM private key")


def check_cert_file(path: Path, what: str) -> None:
    """InputError unless ``path`` is a PEM certificate."""
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist", hint="run golden keys init, or fix the path")
    if not path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----"):
        raise InputError(f"{what} {path} is not a PEM certificate")


def sign_efi(key: DbKey, src: Path, dest: Path) -> None:
    """``dest``: ``src`` (a PE/EFI binary) with an Authenticode signature by ``key``."""
    require("sbsign", "sbsigntool")
    run(["sbsign", "--key", key.key, "--cert", key.cert, "--output", dest, src], capture=True,
        what=f"sbsign {src.name}")


def verifies(cert: Path, image: Path) -> bool:
    """Whether ``image`` carries a valid signature by ``cert`` (sbverify, independent of golden)."""
    require("sbverify", "sbsigntool")
    return run(["sbverify", "--cert", cert, image], capture=True, check=False).returncode == 0


def enrol(h: Hierarchy, template: Path, dest: Path) -> None:
    """``dest``: the OVMF variable store ``template`` with PK, KEK and db enrolled and Secure Boot on."""
    tool = _venv_tool("virt-fw-vars") or require("virt-fw-vars", "virt-firmware (pip install virt-firmware)")
    try:
        run([tool, "-i", template, "-o", dest, "--set-pk", h.owner, h.cert("PK"), "--add-kek", h.owner,
             h.cert("KEK"), "--add-db", h.owner, h.cert("db"), "--secure-boot"], capture=True,
            what="virt-fw-vars (enrol Secure Boot keys)")
    except CommandError as exc:
        raise CommandError(f"could not enrol the Secure Boot keys into {dest}", returncode=exc.returncode,
                           log_tail=exc.log_tail) from None


def _venv_tool(name: str) -> str | None:
    # virt-firmware is one of golden's Python dependencies: its script sits beside our interpreter,
    # which need not be on PATH (a venv used without activation).
    path = Path(sys.executable).parent / name
    return str(path) if path.is_file() else None
