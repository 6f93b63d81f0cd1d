"""A host's state as the fleet shows it: desired vs served vs observed, and the rack it sits in. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.inventory.hosts import Host


@dataclass(frozen=True)
class HostStatus:
    """A host as listings show it: builds, state, last report, drift and taint."""
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
    state: str  # a HostState value
    taint: str | None = None  # why the host is tainted
    stale: tuple[str, ...] = ()  # why it breaks the staleness policy (only when asked with a policy)
    rotation: str | None = None  # why it is out of rotation (drained), when it is
    # the build of a report no live reimage attempt vouched for, newer than the last verified one: shown, never acted on
    unverified: str | None = None
    hw_changed: tuple[str, ...] = ()  # the host's hardware change nobody accepted yet ("+disk vdc (...)", ...)
    clean_report: str | None = None  # a retired host's last cleaning outcome per disk ("vda (virtio): erased by ...")
    # a disk host's A/B slots (None on a RAM host or before its slots are known): the slot it runs, each
    # slot's build, and the build whose boot failed and was left for the other slot (until one is blessed)
    slot: str | None = None
    slot_a: str | None = None
    slot_b: str | None = None
    fell_back: str | None = None


def rack_of(host: Host) -> str:
    """The host's rack: its group named like a rack, else its first group (groups are racks)."""
    return host.rack


def host_state(desired: str | None, observed: str | None, last_report: float | None, drift: tuple[str, ...],
               tainted: bool = False, stale: bool = False, failed: bool = False, drained: bool = False,
               cleaning: str | None = None, fell_back: bool = False) -> str:
    """One state per host, the most urgent first: a retired host (``cleaning`` is its mark) is that
    whatever else holds, then a drained host; a tainted host is that even while a reimage is pending.
    ``fell_back``: the desired build failed its boot on a disk host, which went back to its other slot."""
    if cleaning:
        return cleaning  # a host being or done retiring must never look available
    if drained:
        return "drained"  # out of rotation says the most: nobody may forget a host that serves nothing
    if desired is None:
        return "no-build"
    if last_report is None:
        return "never-reported"
    if tainted:
        return "tainted"
    if fell_back and observed != desired:
        return "fell-back"  # says more than failed: the machine is back on its old build by itself
    if failed:
        return "failed"
    if observed == desired and drift:
        return "drifted"
    if stale:
        return "stale"
    return "pending" if observed != desired else "in-sync"


def slot_summary(h: HostStatus) -> str:
    """A disk host's slots in one phrase (``a: b1 (running), b: b2 (fell back)``); "" on a RAM host."""
    if h.slot is None and h.slot_a is None and h.slot_b is None:
        return ""
    parts = []
    for letter, build in (("a", h.slot_a), ("b", h.slot_b)):
        notes = [n for n, on in (("running", h.slot == letter),
                                 ("fell back", build is not None and build == h.fell_back)) if on]
        parts.append(f"{letter}: {build or '-'}" + (f" ({', '.join(notes)})" if notes else ""))
    return ", ".join(parts)
