"""The fleet's hardware: each selected host's latest facts, one host's history, accepting a change.

What ``golden hw`` and the fleet page read. The facts arrive with reports (``boot.evidence``
keeps them); here they are only read, and a hardware change is accepted (its mark cleared,
with an audit entry naming who and why) once someone has looked at it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from toolkit.core.errors import InputError
from toolkit.fleet.fleet import Fleet
from toolkit.fleet.hardware import Summary, summarize
from toolkit.state.hardware import HardwareRow
from toolkit.store.channels import current_user


@dataclass(frozen=True)
class HostHardware:
    """A selected host with its latest facts (None before its first report with facts) and unaccepted change."""

    host: str
    summary: Summary | None
    facts: dict[str, Any] | None
    changed: tuple[str, ...]


def _selected(fleet: Fleet, pattern: str) -> list[str]:
    inv = fleet.inventory()
    if inv is None:
        return []
    return sorted(h.name for h in (inv.hosts if pattern == "all" else inv.select(pattern)))


def hardware(fleet: Fleet, pattern: str = "all") -> list[HostHardware]:
    """Every host the pattern selects, with its latest facts and any unaccepted change, by name."""
    names = _selected(fleet, pattern)
    with fleet.db.read() as repo:
        latest = {r.host: r for r in repo.all_latest_hardware()}
        marks = repo.hw_marks()
    out = []
    for name in names:
        row, mark = latest.get(name), marks.get(name)
        changed = mark.changes if mark else ()
        out.append(HostHardware(name, summarize(name, row.facts, row.last_seen, changed) if row else None,
                                row.facts if row else None, changed))
    return out


def history(fleet: Fleet, host: str) -> list[HardwareRow]:
    """Every machine ``host`` has been seen as, oldest first; InputError for a host not in the inventory."""
    if host not in _selected(fleet, "all"):
        raise InputError(f"{host}: not a host of the inventory", hint="golden inventory lists them")
    with fleet.db.read() as repo:
        return repo.hardware_history(host)


def accept(fleet: Fleet, pattern: str, reason: str) -> list[str]:
    """Clear the hw-changed mark of the pattern's hosts, audited; the hosts whose mark was cleared."""
    if not reason.strip():
        raise InputError("--accept needs --reason: say why the hardware change is expected")
    names, now, user = _selected(fleet, pattern), time.time(), current_user()
    if not names:
        raise InputError(f"no host matches {pattern!r}", hint="golden inventory lists the hosts")
    cleared = []
    with fleet.db.write() as repo:
        for name in names:
            mark = repo.hw_mark(name)
            if mark is not None and repo.clear_hw_mark(name):
                repo.add_audit(now, user, "hw-accept", name, reason.strip()[:500], json.dumps(list(mark.changes)))
                cleared.append(name)
    return cleared
