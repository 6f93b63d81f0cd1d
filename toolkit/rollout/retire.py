"""Retire: a host's cleaning marks around a run onto the cleaning image (``golden retire``), and clearing them.

A retire is a reimage run (plan, leases, journal, waves, budgets: ``service.execute_plan``) whose
target is the cleaning image and whose hosts are done on the image's cleaning report (the
``clean`` boot event) instead of an agent report. Every host is marked ``cleaning`` before any
BMC is touched, so a dead controller leaves it refused for builds, never available; the cleaning
report makes it ``clean`` or ``clean-failed``; a host that ends the run any other way (no
report, a BMC failure) becomes ``clean-failed`` with the run's reason. Only ``clear`` (audited,
with a reason) lets it have a build again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.fleet.fleet import Fleet, open_fleet
from toolkit.fleet.states import HostState

CLEAN_EVENT = "clean"  # the boot event a cleaning report adds (toolkit.boot.cleaning)
DEFAULT_CLEANER = "cleaner@prod"


def mark_cleaning(fleet: Fleet, hosts: Sequence[str], user: str, reason: str, run_id: str) -> None:
    """Mark every host ``cleaning`` (refused for builds from now on) and audit the retire with its reason."""
    now = time.time()
    with fleet.db.write() as repo:
        for host in hosts:
            repo.set_cleaning(host, HostState.CLEANING.value, now, "", f"retire run {run_id}: {reason}")
            repo.add_audit(now, user, "retire", host, reason, json.dumps({"run": run_id}))


def settle_cleaning(fleet: Fleet, results: dict[str, str], errors: dict[str, str]) -> None:
    """After the run: a host still ``cleaning`` (no cleaning report counted) becomes ``clean-failed``."""
    now = time.time()
    with fleet.db.write() as repo:
        for host in results:
            mark = repo.get_cleaning(host)
            if mark is not None and mark.state == HostState.CLEANING:
                why = errors.get(host) or f"the retire ended without a cleaning report ({results[host]})"
                repo.set_cleaning(host, HostState.CLEAN_FAILED.value, now, mark.attempt, why[:2000])
                repo.add_audit(now, "golden retire", HostState.CLEAN_FAILED.value, host, why[:2000])


def clear_cleaning(fleet: Fleet, hosts: Sequence[str], user: str, reason: str) -> list[str]:
    """Clear the hosts' cleaning marks (they may be given a build again; they follow their inventory image).

    InputError without a reason or when a host has no mark; returns the hosts cleared, each audited."""
    if not reason.strip():
        raise InputError("golden retire --clear needs --reason: clearing lets a host have a build again (audited)")
    now = time.time()
    with fleet.db.write() as repo:
        marks = {h: repo.get_cleaning(h) for h in hosts}
        unmarked = [h for h, m in marks.items() if m is None]
        if unmarked:
            raise InputError(f"not being retired, nothing to clear: {', '.join(unmarked[:10])}",
                             hint="golden fleet shows each host's state")
        for host, mark in marks.items():
            repo.clear_cleaning(host)
            repo.set_desired(host, None, None, now)  # the cleaning image no longer: its inventory image again
            repo.add_audit(now, user, "retire-clear", host, reason, json.dumps({"was": mark.state if mark else ""}))
    return list(hosts)


def clear_retired(settings: Settings, inventory: object, pattern: str, user: str, reason: str) -> list[str]:
    """``golden retire --clear``: the pattern's hosts, each with a cleaning mark, cleared (audited)."""
    fleet = open_fleet(settings, inventory)  # type: ignore[arg-type]
    inv = fleet.inventory()
    names = [h.name for h in inv.select(pattern)] if inv else []
    if not names:
        raise InputError(f"no host matches {pattern!r}", hint="golden inventory lists the hosts")
    return clear_cleaning(fleet, names, user, reason)
