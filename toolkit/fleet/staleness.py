"""Staleness: how old a host's running build is, how far behind its channel, which updates it lacks. Pure.

The packages and security updates a host lacks are what ``golden diff`` shows between the build it
runs and its channel's current build (``toolkit.image.diff``); a policy (``stale:`` in golden.yaml)
turns the numbers into reasons, each naming what is wrong, so ``golden fleet --stale`` can say why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from toolkit.core.config import Settings, StaleConfig
from toolkit.core.errors import InputError
from toolkit.image.diff import Change, PackageChange, diff_manifests
from toolkit.image.manifest import Manifest
from toolkit.state.db import HistoryRow

SHOWN = 5  # packages named in one reason; the rest are counted


@dataclass(frozen=True)
class Staleness:
    """Why a host breaks the staleness policy (no reasons: it does not)."""
    host: str
    image: str
    channel: str | None  # None: the host is pinned to a build
    running: str | None
    current: str | None  # the channel's build now
    age_s: float | None  # since the running build was baked
    builds_behind: int
    packages_behind: tuple[PackageChange, ...]  # upgrades and new packages the current build has
    security_behind: tuple[PackageChange, ...]
    reasons: tuple[str, ...]  # policy violations; empty: not stale

    @property
    def stale(self) -> bool:
        """True when there is any reason."""
        return bool(self.reasons)


def stale_policy(settings: Settings) -> StaleConfig:
    """``stale:`` from golden.yaml (already validated on load); no key: an empty policy that flags nothing."""
    data = settings.extra.get("stale")
    return StaleConfig.model_validate(data) if data else StaleConfig()


def builds_behind(history: list[HistoryRow], running: str | None, current: str | None) -> int:
    """Distinct builds the channel was set to after it last pointed at ``running`` (all of them if it never did)."""
    if running is None or current is None or running == current:
        return 0
    last = max((i for i, h in enumerate(history) if h.to_build == running), default=-1)
    return len({h.to_build for h in history[last + 1:] if h.to_build != running})


def _created(manifest: Manifest) -> float | None:
    try:
        return datetime.fromisoformat(manifest.created_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _named(changes: tuple[PackageChange, ...]) -> str:
    shown = [f"{c.package} {c.old or '(none)'} -> {c.new}" for c in changes[:SHOWN]]
    more = f" and {len(changes) - SHOWN} more" if len(changes) > SHOWN else ""
    return ", ".join(shown) + more


def _reasons(s: Staleness, policy: StaleConfig) -> tuple[str, ...]:
    out = []
    where = f"{s.image}@{s.channel}" if s.channel else s.image
    max_age = policy.max_age_s
    if max_age is not None and s.age_s is not None and s.age_s > max_age:
        out.append(f"running build {s.running} is {s.age_s / 86400:.1f} days old (max {policy.max_age})")
    if policy.max_behind is not None and s.builds_behind > policy.max_behind:
        out.append(f"{s.builds_behind} build(s) behind {where} (max {policy.max_behind})")
    if policy.max_security_behind is not None and len(s.security_behind) > policy.max_security_behind:
        out.append(f"lacks {len(s.security_behind)} security update(s) of {where} build {s.current} "
                   f"(max {policy.max_security_behind}): {_named(s.security_behind)}")
    if policy.max_packages_behind is not None and len(s.packages_behind) > policy.max_packages_behind:
        out.append(f"lacks {len(s.packages_behind)} package update(s) of {where} build {s.current} "
                   f"(max {policy.max_packages_behind}): {_named(s.packages_behind)}")
    return tuple(out)


def assess(host: str, image: str, channel: str | None, running: Manifest | None, current: Manifest | None,
           history: list[HistoryRow], policy: StaleConfig, now: float) -> Staleness:
    """The host's staleness from the manifests of the build it runs and of its channel's current build."""
    behind: tuple[PackageChange, ...] = ()
    if running is not None and current is not None and running.build_id != current.build_id:
        behind = tuple(c for c in diff_manifests(running, current).packages
                       if c.change in (Change.UPGRADED, Change.ADDED))
    created = _created(running) if running else None
    s = Staleness(
        host=host, image=image, channel=channel, running=running.build_id if running else None,
        current=current.build_id if current else None, age_s=(now - created) if created else None,
        builds_behind=builds_behind(history, running.build_id if running else None,
                                    current.build_id if current else None),
        packages_behind=behind, security_behind=tuple(c for c in behind if c.security), reasons=())
    return Staleness(**{**s.__dict__, "reasons": _reasons(s, policy)})


def check_policy(policy: StaleConfig) -> StaleConfig:
    """A policy that flags something: ``--stale`` with an empty one would list nobody, silently."""
    if all(v is None for v in (policy.max_age, policy.max_behind, policy.max_packages_behind,
                               policy.max_security_behind)):
        raise InputError("no staleness policy: golden.yaml has no stale: limits",
                         hint="add e.g. 'stale: {max_age: 14d, max_security_behind: 0}' to golden.yaml")
    return policy
