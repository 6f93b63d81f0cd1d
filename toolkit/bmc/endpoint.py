"""A BMC endpoint: everything needed to talk to one BMC, and nothing about inventories or racks.

The inventory maps a host to its endpoint; the BMC layer only ever sees endpoints. ``name`` is
the host's inventory name, used in messages so an operator knows which machine failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from toolkit.core.secret import Secret

DEFAULT_IPMI_PORT = 623
DEFAULT_REDFISH_PORT = 443


class BmcProtocol(StrEnum):
    """How golden talks to a BMC."""
    IPMI = "ipmi"
    REDFISH = "redfish"


def default_port(protocol: BmcProtocol | str) -> int:
    """The protocol's standard port (623 for IPMI, 443 for Redfish)."""
    return DEFAULT_REDFISH_PORT if protocol == BmcProtocol.REDFISH else DEFAULT_IPMI_PORT


@dataclass(frozen=True)
class BmcEndpoint:
    """Where and how to reach one host's BMC (the password kept as a Secret)."""
    name: str
    address: str  # empty: the host has no BMC address (each command fails with a message saying so)
    port: int = DEFAULT_IPMI_PORT
    protocol: BmcProtocol = BmcProtocol.IPMI
    user: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    verify_tls: bool = True  # Redfish only: verify the BMC's certificate (inventory: bmc_verify)
    ca_file: str | None = None  # Redfish only: CA bundle to verify it against (inventory: bmc_ca_file)

    @property
    def key(self) -> tuple[str, int]:
        """Identity of the BMC itself (several hosts may sit behind one)."""
        return (self.address, self.port) if self.address else (self.name, 0)
