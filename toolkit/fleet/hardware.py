"""Hardware facts: what the agent reports about the machine, checked, compared between boots, summarised.

The agent (``roles/golden_agent/files/golden-agent``) reads ``lshw -json``, ``dmidecode``,
``lsblk`` and ``/sys/class/net`` on the node (it has the data; the wire carries only the facts) and
sends one ``hardware`` object per report. Here it is checked against hard bounds (a hostile node
cannot make the server store megabytes), reduced to its canonical form, and compared with the
host's previous facts: a disk added or gone, memory or CPUs different, a NIC's MAC changed is a
change a datacenter team must see (``hw-changed``); a link going down is not (it is not the
machine that changed). Pure: no I/O, no state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

MAX_ITEMS = 256  # disks, NICs, LLDP neighbours each
MAX_TEXT = 256
MAX_SIZE = 1 << 62  # bytes of one disk; MiB of memory: anything larger is a forged report

SYSTEM_KEYS = ("vendor", "model", "serial")
DISK_KEYS = ("name", "model", "serial", "size_bytes", "transport", "rotational")
NIC_KEYS = ("name", "mac", "driver", "link", "speed_mbps")
LLDP_KEYS = ("interface", "chassis", "port")


class FactsError(ValueError):
    """A hardware object that breaks the wire format; the report is refused as malformed."""


def _text(v: Any, where: str) -> str:
    if v is None:
        return ""
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise FactsError(f"{where}: expected text of at most {MAX_TEXT} characters")
    return "".join(c for c in v if c.isprintable()).strip()


def _count(v: Any, where: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SIZE:
        raise FactsError(f"{where}: expected a whole number from 0 to {MAX_SIZE}")
    return v


def _flag(v: Any, where: str) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    raise FactsError(f"{where}: expected true or false")


def _items(v: Any, where: str) -> list[dict[str, Any]]:
    if v is None:
        return []
    if not isinstance(v, list) or len(v) > MAX_ITEMS or not all(isinstance(x, dict) for x in v):
        raise FactsError(f"{where}: expected a list of at most {MAX_ITEMS} objects")
    return v


def _disk(d: dict[str, Any], i: int) -> dict[str, Any]:
    w = f"hardware.disks[{i}]"
    return {"name": _text(d.get("name"), w + ".name"), "model": _text(d.get("model"), w + ".model"),
            "serial": _text(d.get("serial"), w + ".serial"),
            "size_bytes": _count(d.get("size_bytes"), w + ".size_bytes"),
            "transport": _text(d.get("transport"), w + ".transport"),
            "rotational": _flag(d.get("rotational"), w + ".rotational")}


def _nic(n: dict[str, Any], i: int) -> dict[str, Any]:
    w = f"hardware.nics[{i}]"
    return {"name": _text(n.get("name"), w + ".name"), "mac": _text(n.get("mac"), w + ".mac").lower(),
            "driver": _text(n.get("driver"), w + ".driver"), "link": _text(n.get("link"), w + ".link"),
            "speed_mbps": _count(n.get("speed_mbps"), w + ".speed_mbps")}


def clean_facts(raw: Any) -> dict[str, Any]:
    """The canonical facts of one report's ``hardware`` object; FactsError naming the first bad field."""
    if not isinstance(raw, dict):
        raise FactsError("hardware: expected an object")
    system = raw.get("system") or {}
    cpu = raw.get("cpu") or {}
    for name, part in (("system", system), ("cpu", cpu)):
        if not isinstance(part, dict):
            raise FactsError(f"hardware.{name}: expected an object")
    return {
        "system": {k: _text(system.get(k), f"hardware.system.{k}") for k in SYSTEM_KEYS},
        "cpu": {"model": _text(cpu.get("model"), "hardware.cpu.model"),
                "sockets": _count(cpu.get("sockets"), "hardware.cpu.sockets"),
                "threads": _count(cpu.get("threads"), "hardware.cpu.threads")},
        "memory_mib": _count(raw.get("memory_mib"), "hardware.memory_mib"),
        "disks": sorted((_disk(d, i) for i, d in enumerate(_items(raw.get("disks"), "hardware.disks"))),
                        key=lambda d: (d["name"], d["serial"])),
        "nics": sorted((_nic(n, i) for i, n in enumerate(_items(raw.get("nics"), "hardware.nics"))),
                       key=lambda n: (n["name"], n["mac"])),
        "lldp": [{k: _text(x.get(k), f"hardware.lldp[{i}].{k}") for k in LLDP_KEYS}
                 for i, x in enumerate(_items(raw.get("lldp"), "hardware.lldp"))],
    }


def digest(facts: dict[str, Any]) -> str:
    """A short fingerprint of the facts that matter for change (link state and LLDP excluded)."""
    return hashlib.sha256(json.dumps(identity(facts), sort_keys=True).encode()).hexdigest()[:16]


def identity(facts: dict[str, Any]) -> dict[str, Any]:
    """The part of the facts a change of which is a change of the machine: no link state, speed or LLDP."""
    return {"system": facts.get("system", {}), "cpu": facts.get("cpu", {}), "memory_mib": facts.get("memory_mib"),
            "disks": facts.get("disks", []),
            "nics": [{"name": n.get("name"), "mac": n.get("mac"), "driver": n.get("driver")}
                     for n in facts.get("nics", [])]}


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 30):.1f} GiB"


def _disk_label(d: dict[str, Any]) -> str:
    what = " ".join(x for x in (d.get("model"), d.get("serial") and f"serial {d['serial']}") if x)
    return f"{d.get('name')} ({', '.join(x for x in (what, _gib(d.get('size_bytes'))) if x)})"


def _disk_key(d: dict[str, Any]) -> str:
    # a disk is the same disk while its serial is; without one (some virtual disks), its name and size
    return d.get("serial") or f"{d.get('name')}:{d.get('size_bytes')}"


def _changes_of_disks(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    before = {_disk_key(d): d for d in old}
    after = {_disk_key(d): d for d in new}
    return ([f"+disk {_disk_label(after[k])}" for k in sorted(after.keys() - before.keys())]
            + [f"-disk {_disk_label(before[k])}" for k in sorted(before.keys() - after.keys())])


def _changes_of_nics(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    before = {str(n.get("mac")): n for n in old}
    after = {str(n.get("mac")): n for n in new}
    return ([f"+nic {after[m].get('name')} ({m}, {after[m].get('driver') or '?'})"
             for m in sorted(after.keys() - before.keys())]
            + [f"-nic {before[m].get('name')} ({m}, {before[m].get('driver') or '?'})"
               for m in sorted(before.keys() - after.keys())])


def diff_facts(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed from ``old`` to ``new``, one line each ("+disk vdc (...)", "memory 1536 -> 1024 MiB")."""
    out: list[str] = []
    for k in SYSTEM_KEYS:
        a, b = old.get("system", {}).get(k, ""), new.get("system", {}).get(k, "")
        if a != b:
            out.append(f"system {k} {a or '?'} -> {b or '?'}")
    a_mem, b_mem = old.get("memory_mib"), new.get("memory_mib")
    if a_mem != b_mem:
        out.append(f"memory {a_mem if a_mem is not None else '?'} MiB -> {b_mem if b_mem is not None else '?'} MiB")
    for k in ("model", "sockets", "threads"):
        a, b = old.get("cpu", {}).get(k), new.get("cpu", {}).get(k)
        if a != b:
            out.append(f"cpu {k} {a if a not in (None, '') else '?'} -> {b if b not in (None, '') else '?'}")
    return out + _changes_of_disks(old.get("disks", []), new.get("disks", [])) + _changes_of_nics(
        old.get("nics", []), new.get("nics", []))


@dataclass(frozen=True)
class Summary:
    """One host's facts as ``golden hw`` shows them in a row."""

    host: str
    vendor: str
    model: str
    serial: str
    cpu: str
    memory_mib: int | None
    disks: str
    nics: str
    seen: float
    changed: tuple[str, ...]


def summarize(host: str, facts: dict[str, Any], seen: float, changed: tuple[str, ...] = ()) -> Summary:
    """The row of ``golden hw`` for one host's latest facts."""
    s, c = facts.get("system", {}), facts.get("cpu", {})
    cpu = f"{c.get('threads') or '?'}x {c.get('model') or '?'}"
    disks = ", ".join(f"{d.get('name')} {_gib(d.get('size_bytes'))}" for d in facts.get("disks", []))
    nics = ", ".join(f"{n.get('name')} {n.get('mac')}" for n in facts.get("nics", []))
    return Summary(host, s.get("vendor", ""), s.get("model", ""), s.get("serial", ""), cpu,
                   facts.get("memory_mib"), disks, nics, seen, changed)
