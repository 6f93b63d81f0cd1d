"""``Repo``: the one handle a transaction gives its caller, composed of the state layer's rooms.

Each room (``channels``, ``hosts``, ``access``, ``boots``, ``runs``, ``leases``, ``rotation``, ``tables``,
``evidence``, ``hardware``, ``cleaning``, ``slots``) owns
the queries of one family of tables and their row types; ``Repo`` inherits them all, so a caller
holds one object and calls ``repo.get_host(...)`` or ``repo.add_audit(...)`` whichever room
answers. All share the transaction's one connection.
"""

from __future__ import annotations

from toolkit.state.access import Access
from toolkit.state.boots import Boots
from toolkit.state.channels import Channels
from toolkit.state.cleaning import CleaningRoom
from toolkit.state.evidence import EvidenceRoom
from toolkit.state.hardware import HardwareRoom
from toolkit.state.hosts import Hosts
from toolkit.state.leases import Leases
from toolkit.state.rotation import HostRotation
from toolkit.state.runs import Runs
from toolkit.state.slots import SlotsRoom
from toolkit.state.tables import Tables


class Repo(Channels, Hosts, Access, Boots, Runs, Leases, HostRotation, Tables, EvidenceRoom, HardwareRoom,
           CleaningRoom, SlotsRoom):
    """Every query golden runs against the state DB. One instance per transaction."""
