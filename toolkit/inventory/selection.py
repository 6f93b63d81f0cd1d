"""Which hosts a verb acts on, found the way ``ansible`` finds them: sources, ``--limit``, vault options.

Sources, first found wins: every ``-i`` given (repeatable), ``GOLDEN_INVENTORY``,
``ANSIBLE_INVENTORY`` (comma-separated, as Ansible reads it), ``inventory:`` in golden.yaml, the
``inventory`` setting of the ``ansible.cfg`` Ansible would read (``ANSIBLE_CONFIG``,
``./ansible.cfg``, ``~/.ansible.cfg``, ``/etc/ansible/ansible.cfg``), then ``/etc/ansible/hosts``
when it exists. The lab's inventory is used only when asked for by the name ``lab`` in any of
those places; nothing falls back to it silently. Finding nothing is an error that lists every place
tried. Nothing here imports ansible-core (it costs seconds); the sources go to it unchanged.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Sequence
from pathlib import Path

from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.inventory.vault import VaultOptions

LAB_SOURCE = "lab"  # the source name meaning the running lab's inventory ('golden lab up' writes it)
ANSIBLE_DEFAULT_HOSTS = Path("/etc/ansible/hosts")


class NoInventoryError(InputError):
    """No inventory source was given or found in any place Ansible (or golden) looks."""


class Selection(list[str]):
    """The ``-i`` sources as given (a list, as every verb's ``inventory`` argument has always been),
    plus ``--limit`` and the vault options, so every verb reads its hosts exactly as ``ansible`` would."""

    def __init__(self, sources: Sequence[str] = (), limit: str | None = None,
                 vault: VaultOptions | None = None) -> None:
        super().__init__(sources)
        self.limit = limit
        self.vault = vault or VaultOptions()


def limit_of(inventory: object) -> str | None:
    return inventory.limit if isinstance(inventory, Selection) else None


def vault_of(inventory: object) -> VaultOptions | None:
    return inventory.vault if isinstance(inventory, Selection) else None


def lab_inventory(settings: Settings) -> Path:
    return settings.home / "lab" / "inventory.yaml"  # written by 'golden lab up'


def _expand(value: str, settings: Settings, base: Path | None = None) -> Path:
    if value == LAB_SOURCE:
        return lab_inventory(settings)
    path = Path(os.path.expanduser(value))
    return base / path if base is not None and not path.is_absolute() and "," not in value else path


def ansible_cfg_path() -> Path | None:
    """The ansible.cfg Ansible itself would read (its documented search order)."""
    named = Path(os.path.expanduser(os.environ["ANSIBLE_CONFIG"])) if os.environ.get("ANSIBLE_CONFIG") else None
    candidates = [named / "ansible.cfg" if named and named.is_dir() else named,
                  Path.cwd() / "ansible.cfg", Path.home() / ".ansible.cfg", Path("/etc/ansible/ansible.cfg")]
    return next((c for c in candidates if c is not None and c.is_file()), None)


def ansible_cfg_inventory(cfg: Path) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        parser.read(cfg)
    except configparser.Error as exc:
        raise InputError(f"{cfg}: cannot be read as ansible.cfg: {str(exc).splitlines()[0]}") from None
    value = parser.get("defaults", "inventory", fallback="") or parser.get("defaults", "hostfile", fallback="")
    return [v.strip() for v in value.split(",") if v.strip()]


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def find_sources(cli_value: str | Path | Sequence[str | Path] | None, settings: Settings) -> tuple[Path, ...]:
    """The inventory sources, first place found wins (see the module docstring); else NoInventoryError."""
    given = [str(cli_value)] if isinstance(cli_value, str | Path) else [str(v) for v in cli_value or ()]
    if given:
        return tuple(_expand(v, settings) for v in given)
    tried = ["-i (not given)"]
    for name in ("GOLDEN_INVENTORY", "ANSIBLE_INVENTORY"):
        value = os.environ.get(name, "")
        if value.strip():
            return tuple(_expand(v, settings) for v in ([value] if name == "GOLDEN_INVENTORY" else _split(value)))
        tried.append(f"{name} (unset)")
    if settings.inventory is not None:
        return (_expand(str(settings.inventory), settings, settings.project),)
    tried.append(f"inventory: in {settings.project / 'golden.yaml'} (not set)")
    cfg = ansible_cfg_path()
    if cfg is not None and (found := ansible_cfg_inventory(cfg)):
        return tuple(_expand(v, settings, cfg.parent) for v in found)
    tried.append(f"inventory in {cfg} (not set)" if cfg else "ansible.cfg (none found)")
    if ANSIBLE_DEFAULT_HOSTS.exists():
        return (ANSIBLE_DEFAULT_HOSTS,)
    tried.append(f"{ANSIBLE_DEFAULT_HOSTS} (missing)")
    raise NoInventoryError(f"no inventory: tried {', '.join(tried)}",
                           hint="pass -i PATH (repeatable) or set ANSIBLE_INVENTORY; -i lab reads the lab's inventory")
