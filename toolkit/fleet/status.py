"""A host's state as the fleet shows it: desired vs served vs observed, and the rack it sits in. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.inventory.hosts import Host


@dataclass(frozen=True)
class HostStatus:
    name: str
    rack: str
    mac: str
    image: str
    desired: str | None
    desired_source: str
    served: str | None
    observed: str | None
    observed_since: float | None
    booted_at: str | None
    last_report: float | None
    drift: tuple[str, ...]
    state: str  # in-sync | pending | drifted | never-reported | no-build


def rack_of(host: Host) -> str:
    """The host's rack: its group named like a rack, else its first group (groups are racks)."""
    groups = [g for g in host.groups if g not in ("all", "ungrouped")]
    racks = [g for g in groups if "rack" in g]
    return (racks or groups or [""])[0]


def host_state(desired: str | None, observed: str | None, last_report: float | None, drift: tuple[str, ...]) -> str:
    if desired is None:
        return "no-build"
    if last_report is None:
        return "never-reported"
    if observed != desired:
        return "pending"
    return "drifted" if drift else "in-sync"
