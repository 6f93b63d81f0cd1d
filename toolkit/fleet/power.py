"""``golden power`` and ``golden bootdev``: inventory hosts selected by pattern, mapped to their BMC endpoints."""

from __future__ import annotations

from toolkit.bmc.base import BootDevice, PowerAction
from toolkit.bmc.control import FanoutReport, bootdev_hosts, power_hosts
from toolkit.bmc.pool import BmcPool
from toolkit.bmc.tls import warn_unverified
from toolkit.core.config import Settings
from toolkit.inventory.hosts import Host
from toolkit.inventory.view import load_selection


def _select(settings: Settings, inventory: str | list[str] | None, pattern: str) -> list[Host]:
    """The hosts a pattern selects (within --limit), every one with a BMC address (else an error before
    any BMC is contacted)."""
    inv = load_selection(settings, inventory)
    hosts = inv.select(pattern)
    inv.require_bmc(hosts)
    inv.open_passwords(hosts)
    warn_unverified(h.endpoint for h in hosts)
    return hosts


def power_pattern(settings: Settings, inventory: str | list[str] | None, pattern: str, action: PowerAction,
                  *, workers: int = 16) -> FanoutReport:
    """``golden power``: resolve the inventory, select hosts by Ansible pattern, fan out."""
    hosts = _select(settings, inventory, pattern)
    with BmcPool(processes=workers) as pool:
        return power_hosts([h.endpoint for h in hosts], action, pool=pool)


def bootdev_pattern(settings: Settings, inventory: str | list[str] | None, pattern: str, device: BootDevice,
                    *, persistent: bool = False, workers: int = 16) -> FanoutReport:
    """Set the boot device of every host ``pattern`` selects."""
    hosts = _select(settings, inventory, pattern)
    with BmcPool(processes=workers) as pool:
        return bootdev_hosts([h.endpoint for h in hosts], device, persistent=persistent, pool=pool,
                             uefi={h.name: h.uefi for h in hosts})
