"""What a machine boots when it asks for ``/boot/<mac>.ipxe``: decided from what can be read.

A build that may not be used here (its signature does not verify against the trusted keys, or it
is unsigned in a home that trusts keys: ``Store.verify``) is no build to boot: the machine gets the
no-build script and the reason is logged and recorded as the boot event's detail.

Recording the decision (the host's served build, the boot event, an unknown machine) is best
effort: when the state DB cannot be written, the machine still gets its script (fail open on
availability) and the caller counts the dropped write.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.core.errors import GoldenError
from toolkit.core.mac import normalize_mac
from toolkit.fleet.desired import DesiredBuild
from toolkit.fleet.fleet import Fleet
from toolkit.image.manifest import UKI
from toolkit.install.settings import InstallMode
from toolkit.state.db import StateError
from toolkit.store.artifacts import Build


@dataclass(frozen=True)
class BootDecision:
    """What a machine asking for a boot script gets: its host, the build and why."""
    mac: str
    host: str | None  # None: not in the inventory
    build: Build | None  # None: nothing to boot (unknown machine, empty channel, build gone)
    desired: DesiredBuild | None
    problem: str = ""
    recorded: bool = True  # False: the state DB could not be written (the decision still stands)
    secure_boot: bool = False  # the host var secure_boot: the host gets the build's signed UKI
    disk: bool = False  # install: disk: within a reimage attempt the node installs the build to its disk


def decide_build(fleet: Fleet, mac: str) -> BootDecision:
    """What ``mac`` boots now, read only (``decide_boot`` also records it)."""
    host = fleet.host_by_mac(mac)
    if host is None:
        return BootDecision(mac, None, None, None, "not in the inventory")
    desired = fleet.desired_for(host)
    if desired is None:
        return BootDecision(mac, host.name, None, None,
                            f"no build to boot: image {host.image or '(none)'} resolves to nothing")
    build = fleet.store.find(desired.image, desired.build_id)
    if build is None:
        return BootDecision(mac, host.name, None, desired,
                            f"desired build {desired.image}/{desired.build_id} is not in the store")
    try:
        fleet.store.verify(build)
    except GoldenError as exc:  # a bad signature, or an unusable trusted key file: fail closed
        return BootDecision(mac, host.name, None, desired, f"refused: {exc.message}")
    secure = _secure_boot(host.vars)
    if secure and UKI not in build.manifest.artifacts:  # never the unsigned chain for a secure_boot host
        return BootDecision(mac, host.name, None, desired, f"build {build.image}/{build.build_id} has no signed UKI "
                            "for this secure_boot host (golden keys init, then bake)")
    return BootDecision(mac, host.name, build, desired, secure_boot=secure, disk=host.install == InstallMode.DISK)


def _secure_boot(host_vars: Mapping[str, Any]) -> bool:
    # Fail closed: anything but an explicit false (as Ansible reads booleans) asks for the signed chain.
    value = host_vars.get("secure_boot", False)
    return str(value).strip().lower() not in ("false", "no", "0", "off", "")


def _record(fleet: Fleet, d: BootDecision, remote_addr: str | None) -> None:
    now = time.time()
    with fleet.db.write_rows() as repo:  # each statement atomic on its row: replicas need not queue
        if d.host is None:  # anyone can ask for any MAC: bounded rows, counted per address and hour
            repo.record_unknown_capped(d.mac, now, remote_addr or "")
            repo.count_noise("unknown-mac", remote_addr or "-", now, d.mac)
            return
        repo.ensure_host(d.host, d.mac)
        if d.build is None:
            repo.add_event("no-build", now, d.mac, d.host, d.desired.build_id if d.desired else None, d.problem)
            return
        repo.set_served(d.host, d.build.build_id, now)
        repo.add_event("served", now, d.mac, d.host, d.build.build_id, d.desired.source if d.desired else "")


def decide_boot(fleet: Fleet, mac: str, remote_addr: str | None = None) -> BootDecision:
    """What ``mac`` boots now, and whether that could be recorded."""
    decision = decide_build(fleet, normalize_mac(mac))
    try:
        _record(fleet, decision, remote_addr)
    except StateError:
        return BootDecision(decision.mac, decision.host, decision.build, decision.desired, decision.problem,
                            recorded=False, secure_boot=decision.secure_boot, disk=decision.disk)
    return decision
