"""``golden inventory``: the hosts a pattern selects, with golden's fields as Ansible resolved them.

Never the BMC password: a view holds only whether the host has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.core.config import Settings
from toolkit.inventory.hosts import Host, Inventory, load_inventory, resolve_inventory_sources
from toolkit.inventory.selection import limit_of, vault_of
from toolkit.inventory.vault import VaultOptions


@dataclass(frozen=True)
class HostView:
    """A host as listings show it (and --json emits it)."""
    name: str
    rack: str
    groups: tuple[str, ...]
    mac: str | None
    bmc_address: str | None
    bmc_port: int | None
    bmc_protocol: str | None
    bmc_user: str | None
    bmc_password_set: bool
    image: str | None
    uefi: bool
    install: str = "ram"  # ram | disk

    def as_dict(self) -> dict[str, Any]:
        """The view as a dict, quickly."""
        return {**vars(self), "groups": list(self.groups)}  # dataclasses.asdict deep-copies: 10x slower


def view_of(host: Host) -> HostView:
    """The listing view of ``host``."""
    b = host.bmc
    return HostView(name=host.name, rack=host.rack, groups=host.groups, mac=host.mac,
                    bmc_address=b.address if b else None, bmc_port=b.port if b else None,
                    bmc_protocol=b.protocol.value if b else None, bmc_user=b.user if b else None,
                    bmc_password_set="bmc_password" in host.vars, image=host.image, uefi=host.uefi,
                    install=host.install.value)


def load_selection(settings: Settings, inventory: Sequence[str | Path] | str | None) -> Inventory:
    """The inventory a verb's ``-i``/``--limit``/vault options name (a ``Selection``, or plain sources),
    resolved (cached) and narrowed to ``--limit`` as ``ansible`` narrows it."""
    inv = load_inventory(resolve_inventory_sources(inventory, settings), vault=vault_of(inventory),
                         cache_dir=settings.cache)
    return inv.subset(limit_of(inventory))


def select_hosts(settings: Settings, inventory: Sequence[str | Path] | str | None, pattern: str) -> list[Host]:
    """The hosts ``ansible -i SOURCES PATTERN --limit LIMIT --list-hosts`` lists, in inventory order."""
    return load_selection(settings, inventory).select(pattern)


def list_inventory(settings: Settings, sources: Sequence[str | Path] | str | None, pattern: str = "all",
                   limit: str | None = None, vault: VaultOptions | None = None) -> list[HostView]:
    """Resolve the sources (cached), select like ``ansible PATTERN --limit LIMIT``, and describe each host."""
    inv = load_inventory(resolve_inventory_sources(sources, settings), vault=vault or vault_of(sources),
                         cache_dir=settings.cache)
    return [view_of(h) for h in inv.select(pattern, limit or limit_of(sources))]
