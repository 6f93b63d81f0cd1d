"""Promotion gates beyond the bake checks, from ``golden.yaml``::

    promotion:
      staging: {lab_boot: true}
      prod: {lab_boot: true, in_sync: 3, soak: 24h}

``lab_boot``: the build passed a boot test on lab machines (a successful reimage of the lab, or a
nightly's boot test, records it). ``in_sync`` with ``soak``: at least N hosts have run the build,
in sync, for that long. Parsing and evaluation are pure; the evidence is read by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator

from toolkit.core.duration import parse_duration
from toolkit.core.errors import InputError

LAB_BOOT = "lab-boot"
class ChannelGates(BaseModel):
    """The gates a build must pass to enter a channel (golden.yaml ``promotion:``)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    lab_boot: bool = False
    in_sync: int = Field(default=0, ge=0, le=100_000)
    soak: float = 0.0

    @field_validator("soak", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        try:
            return parse_duration(value, "soak", lo=0, hi=366 * 86400.0)
        except InputError as exc:
            raise ValueError(exc.message) from None


class PromotionConfig(RootModel[dict[str, ChannelGates]]):
    """``promotion:`` in golden.yaml: target channel -> its gates (checked by toolkit.core.configschema)."""


def parse_policy(data: Any, where: str = "golden.yaml: .promotion") -> dict[str, ChannelGates]:
    """The gates per target channel; InputError naming the key for anything malformed."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping of channel -> gates")
    out = {}
    for channel, gates in data.items():
        try:
            out[str(channel)] = ChannelGates.model_validate(gates or {})
        except ValidationError as exc:
            e = exc.errors()[0]
            path = ".".join(str(p) for p in e["loc"])
            raise InputError(f"{where}.{channel}.{path}: {e['msg']}") from None
    return out


@dataclass(frozen=True)
class GateEvidence:
    """What is known of a build against the gates."""
    lab_boot_passed: bool
    soaked_hosts: int  # hosts in sync on the build for at least the soak time


def missing_gates(gates: ChannelGates | None, evidence: GateEvidence) -> list[str]:
    """What the build still lacks before it may enter the channel (empty: every gate passed)."""
    if gates is None:
        return []
    missing = []
    if gates.lab_boot and not evidence.lab_boot_passed:
        missing.append("no passed lab boot test")
    if gates.in_sync and evidence.soaked_hosts < gates.in_sync:
        missing.append(f"{evidence.soaked_hosts} of {gates.in_sync} host(s) in sync on it for {gates.soak:g} s")
    return missing
