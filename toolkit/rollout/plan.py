"""Pure planning of a reimage run: which hosts move, in which waves, under which limits.

Nothing here touches a BMC, the network or the database; ``golden reimage --dry-run`` prints
exactly what this returns, and the executor acts on exactly this.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toolkit.core.errors import InputError
from toolkit.install.slots import Slot, target_slot

if TYPE_CHECKING:  # hooks.py imports Amount from here; a plan only carries its HookPlan
    from toolkit.rollout.hooks import HookPlan

_AMOUNT = re.compile(r"^(\d+)(%?)$")


@dataclass(frozen=True)
class Amount:
    """A count given as ``N`` or ``P%`` of some total."""

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, text: str | int, option: str) -> Amount:
        """``10`` or ``10%``; InputError naming ``option`` otherwise."""
        m = _AMOUNT.match(str(text).strip())
        if not m:
            raise InputError(f"{option}: expected a whole number or a percentage like 10%, got {text!r}")
        value, pct = int(m.group(1)), bool(m.group(2))
        if pct and not 0 <= value <= 100:
            raise InputError(f"{option}: a percentage must be between 0% and 100%, got {text!r}")
        return cls(value, pct)

    def of(self, total: int, *, at_least_one: bool = False) -> int:
        """The amount of ``total`` (at least one of a non-empty total with ``at_least_one``)."""
        n = math.floor(total * self.value / 100) if self.percent else self.value
        return max(n, 1) if at_least_one and total > 0 else n

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


@dataclass(frozen=True)
class Candidate:
    """A host as the planner sees it."""

    name: str
    rack: str
    current_build: str | None
    current_image: str | None = None
    disk: bool = False  # install: disk (written to its inactive slot) rather than run in RAM
    uefi: bool = True
    active_slot: Slot | None = None  # a disk host's running slot, None when not known


@dataclass(frozen=True)
class Policy:
    """How a reimage goes: canaries, wave size, failures and unavailability allowed, per rack."""
    canary: int = 1
    wave_size: Amount = Amount(10, percent=True)
    max_unavailable: Amount | None = None
    max_failures: Amount = Amount(0)
    per_rack: int | None = None
    boot_timeout_s: float = 900.0
    retries: int = 1
    include_current: bool = False
    rollback: bool = True  # False: a host that fails stays as it failed (a lab boot test keeps its console)


@dataclass(frozen=True)
class Wave:
    """One wave of hosts reimaged together."""
    index: int
    hosts: tuple[str, ...]
    canary: bool = False


@dataclass(frozen=True)
class Plan:
    """A reimage, planned: the target, the policy and the waves."""
    image: str
    target_build: str
    policy: Policy
    waves: tuple[Wave, ...]
    moves: dict[str, tuple[str | None, str]]  # host -> (current, target)
    unchanged: tuple[str, ...] = ()  # already on the target build
    # The image each moving host runs now, so a rollback can go back across images.
    current_images: dict[str, str | None] = field(default_factory=dict)
    failure_budget: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    hooks: HookPlan | None = None  # golden.yaml rollout.hooks as they apply to these hosts
    slots: dict[str, str] = field(default_factory=dict)  # disk host -> the slot it writes ("a" or "b")

    @property
    def hosts(self) -> list[str]:
        """Every host of the plan, in wave order."""
        return [h for w in self.waves for h in w.hosts]


def _interleave_by_rack(cands: list[Candidate]) -> list[Candidate]:
    """Round-robin across racks so every wave spreads its risk over as many racks as it can."""
    by_rack: dict[str, list[Candidate]] = defaultdict(list)
    for c in sorted(cands, key=lambda c: (c.rack, c.name)):
        by_rack[c.rack].append(c)
    racks = sorted(by_rack)
    out: list[Candidate] = []
    while any(by_rack[r] for r in racks):
        for r in racks:
            if by_rack[r]:
                out.append(by_rack[r].pop(0))
    return out


def _cut_waves(order: list[Candidate], size: int, per_rack: int | None) -> list[list[Candidate]]:
    waves: list[list[Candidate]] = []
    pending = list(order)
    while pending:
        wave: list[Candidate] = []
        counts: dict[str, int] = defaultdict(int)
        rest: list[Candidate] = []
        for c in pending:
            if len(wave) < size and (per_rack is None or counts[c.rack] < per_rack):
                wave.append(c)
                counts[c.rack] += 1
            else:
                rest.append(c)
        waves.append(wave)
        pending = rest
    return waves


def refuse_bios_disk(candidates: list[Candidate]) -> None:
    """InputError naming the hosts that ask for ``install: disk`` on BIOS firmware (disk installs boot
    through systemd-boot's counter, which only UEFI has)."""
    bios = [c.name for c in candidates if c.disk and not c.uefi]
    if bios:
        names = ", ".join(bios[:10]) + (f" and {len(bios) - 10} more" if len(bios) > 10 else "")
        raise InputError(f"host{'s' if len(bios) > 1 else ''} {names}: install: disk needs UEFI firmware, "
                         "and the inventory says uefi: false",
                         hint="set uefi: true for a UEFI machine, or install: ram")


def plan_slots(moving: list[Candidate]) -> dict[str, str]:
    """The slot each moving disk host writes: its inactive one, A when its slots are not known."""
    return {c.name: target_slot(c.active_slot).value for c in moving if c.disk}


def plan_reimage(image: str, target_build: str, candidates: list[Candidate], policy: Policy) -> Plan:
    """Waves for the candidates under ``policy`` (pure); InputError for an impossible policy."""
    if not candidates:
        raise InputError("the host pattern matched no hosts", hint="check the pattern with: golden fleet PATTERN")
    refuse_bios_disk(candidates)
    if policy.canary < 0:
        raise InputError("--canary: must be 0 or more")
    if policy.per_rack is not None and policy.per_rack < 1:
        raise InputError("--per-rack: must be 1 or more")
    moving = [c for c in candidates if policy.include_current or c.current_build != target_build]
    unchanged = tuple(sorted(c.name for c in candidates if c not in moving))
    total = len(moving)
    size = policy.wave_size.of(total, at_least_one=True)
    notes = []
    if policy.max_unavailable is not None:
        cap = policy.max_unavailable.of(len(candidates))
        if cap < 1:
            raise InputError(
                f"--max-unavailable {policy.max_unavailable} of {len(candidates)} host(s) allows no host "
                "to be down at once", hint="raise --max-unavailable")
        if cap < size:
            notes.append(f"wave size {size} capped to {cap} by --max-unavailable {policy.max_unavailable}")
            size = cap
    order = _interleave_by_rack(moving)
    waves: list[Wave] = []
    canary_n = min(policy.canary, total)
    if canary_n:
        # The canary wave ignores the wave size: it is the whole first wave, and must fully pass.
        canary_hosts = order[:canary_n]
        waves.append(Wave(0, tuple(c.name for c in canary_hosts), canary=True))
        order = order[canary_n:]
    for chunk in _cut_waves(order, size, policy.per_rack):
        waves.append(Wave(len(waves), tuple(c.name for c in chunk)))
    return Plan(
        image=image,
        target_build=target_build,
        policy=policy,
        waves=tuple(waves),
        moves={c.name: (c.current_build, target_build) for c in moving},
        current_images={c.name: c.current_image for c in moving},
        unchanged=unchanged,
        failure_budget=policy.max_failures.of(total),
        notes=tuple(notes),
        slots=plan_slots(moving),
    )
