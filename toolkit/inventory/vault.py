"""Vault secrets for the inventory, set up through Ansible's own options, and passwords decrypted late.

Where the vault passwords come from is Ansible's business: ``--vault-id``, ``--vault-password-file``,
``ANSIBLE_VAULT_PASSWORD_FILE``, ``ANSIBLE_VAULT_IDENTITY_LIST`` and executable vault scripts all go
through ``CLI.setup_vault_secrets``; ``GOLDEN_VAULT_PASSWORD_FILE`` is one more password file.
A BMC password stays ciphertext (the user's vault, or a per-cache key for a password written in
clear) until ``reveal()``, so the inventory cache never holds one in clear.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from toolkit.core.errors import InputError
from toolkit.core.fsutil import atomic_write
from toolkit.core.secret import Secret

GOLDEN_VAULT_ENV = "GOLDEN_VAULT_PASSWORD_FILE"


class VaultError(InputError):
    """A vault password cannot be found, run or read, or it does not open a value."""


@dataclass(frozen=True)
class VaultOptions:
    """Where vault passwords come from: vault ids and password files."""
    vault_ids: tuple[str, ...] = ()
    password_files: tuple[str, ...] = ()

    def with_env(self) -> VaultOptions:
        """Add what the environment names, read now rather than when ansible-core was imported:
        ANSIBLE_VAULT_IDENTITY_LIST first (as Ansible does), then the password files."""
        ids = [v for v in os.environ.get("ANSIBLE_VAULT_IDENTITY_LIST", "").split(",") if v.strip()]
        files = [os.environ.get(e, "") for e in ("ANSIBLE_VAULT_PASSWORD_FILE", GOLDEN_VAULT_ENV)]
        vault_ids = tuple(dict.fromkeys([*ids, *self.vault_ids]))
        password_files = tuple(dict.fromkeys([*self.password_files, *(f for f in files if f)]))
        return VaultOptions(vault_ids, password_files)

    def stamp(self) -> list[Any]:
        """What the cache key needs: which password sources, and the files' mtimes and sizes."""
        paths = [*self.password_files, *(v.partition("@")[2] or v for v in self.vault_ids)]
        out: list[Any] = []
        for p in paths:
            try:
                st = os.stat(p)
                out.append([p, st.st_mtime_ns, st.st_size])
            except OSError:
                out.append([p, None, None])
        return out


@cache
def vault_secrets(options: VaultOptions) -> list[tuple[str, Any]]:
    """Ansible's vault secrets for these options, set up once per process (scripts run once)."""
    from ansible import constants as C
    from ansible.cli import CLI
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader

    # with_env() already added the environment's files; Ansible's copy was read at import time
    C.DEFAULT_VAULT_PASSWORD_FILE = None
    try:
        return list(CLI.setup_vault_secrets(DataLoader(), list(options.vault_ids), list(options.password_files),
                                            auto_prompt=False, initialize_context=False))
    except AnsibleError as exc:
        raise VaultError(f"vault password: {_first_line(exc)}",
                         hint="check --vault-id / --vault-password-file / ANSIBLE_VAULT_PASSWORD_FILE") from None


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return str(text).strip().splitlines()[0][:300] if str(text).strip() else type(exc).__name__


@cache
def decrypt_vault(ciphertext: str, options: VaultOptions) -> str:
    """The clear text of one vault value; the same ciphertext (a group's password) is decrypted once."""
    from ansible.parsing.vault import VaultLib

    found = vault_secrets(options)
    if not found:
        raise VaultError("the value is vault-encrypted but no vault password is given",
                         hint=f"pass --vault-id or --vault-password-file, or set ANSIBLE_VAULT_PASSWORD_FILE "
                              f"or {GOLDEN_VAULT_ENV}")
    try:
        return VaultLib(found).decrypt(ciphertext.strip()).decode("utf-8")
    except Exception:  # a wrong password, or a malformed body (AnsibleVaultFormatError, binascii.Error)
        # never chain the library's exception: it may carry ciphertext details
        raise VaultError("cannot decrypt the vault value with the vault password(s) given",
                         hint="check that the vault password is the one the value was encrypted with") from None


# ---- per-cache sealing of passwords written in clear ----

def cache_key(key_file: Path) -> bytes:
    """The key sealing clear-text passwords in the cache; created once, 0600, beside the cache."""
    try:
        return key_file.read_bytes()
    except FileNotFoundError:
        pass
    from cryptography.fernet import Fernet

    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:  # exclusive: the first writer wins, so two processes never seal with different keys
        atomic_write(key_file, Fernet.generate_key(), mode=0o600, exclusive=True)
    except FileExistsError:
        pass
    return key_file.read_bytes()


def seal(clear: str, key: bytes) -> str:
    """``clear`` encrypted with ``key`` (for the inventory cache)."""
    from cryptography.fernet import Fernet

    return Fernet(key).encrypt(clear.encode()).decode()


def unseal(token: str, key: bytes) -> str:
    """A sealed value decrypted; VaultError when it was sealed with another key."""
    from cryptography.fernet import Fernet, InvalidToken

    try:
        return Fernet(key).decrypt(token.encode()).decode()
    except InvalidToken:
        raise VaultError("the inventory cache was sealed with another key",
                         hint="delete the cache folder's inventory-*.json files") from None


class LazySecret(Secret):
    """A Secret whose clear text is computed on first reveal (decrypting a vault value, say)."""

    __slots__ = ("_thunk",)

    def __init__(self, thunk: Callable[[], str]) -> None:
        super().__init__("")
        self._thunk: Callable[[], str] | None = thunk

    def reveal(self) -> str:
        """The value, decrypted on first use."""
        if self._thunk is not None:
            self._value, self._thunk = self._thunk(), None
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.reveal() == self.reveal()

    def __hash__(self) -> int:
        return hash(("Secret", self.reveal()))
