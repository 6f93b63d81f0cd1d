"""Pure: what a nightly does with one image, from its plan, its dev channel and upstream's candidates.

"No change" means: the build id of the current inputs (spec, role and element bytes, DIB version,
bake recipe, package snapshot stamp; see toolkit.bake.plan) is the build ``<image>@dev`` points at,
and no package installed in that build has a newer candidate in the mirror's suites
(toolkit.nightly.upstream). Then a bake would only reproduce that build, so none runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from toolkit.nightly.upstream import Upgrade


class Action(StrEnum):
    """What a nightly does with an image."""
    NO_CHANGE = "no-change"
    REUSE = "reuse"  # the current inputs' build is already stored (a manual bake): test and publish it
    BAKE = "bake"  # bake with refreshed packages, then test and publish


@dataclass(frozen=True)
class Decision:
    """A nightly's decision for an image, and why."""
    action: Action
    reasons: tuple[str, ...]


def changed_inputs(planned: dict[str, Any], baked: dict[str, Any]) -> list[str]:
    """Which inputs of a planned build differ from a baked one's, in words (``role web``, ``spec``)."""
    out = []
    if planned.get("spec_sha256") != baked.get("spec_sha256"):
        out.append("spec")
    old_roles, new_roles = baked.get("roles") or {}, planned.get("roles") or {}
    for role in sorted(set(old_roles) | set(new_roles)):
        if old_roles.get(role) != new_roles.get(role):
            out.append(f"role {role}")
    names = {"elements": "DIB elements", "dib_version": "DIB version", "recipe": "bake recipe",
             "snapshot": "package snapshot"}
    out += [label for key, label in names.items() if planned.get(key) != baked.get(key)]
    return out


def _upgrade_words(upgrades: list[Upgrade]) -> str:
    security = sum(1 for u in upgrades if u.suite.endswith("-security"))
    shown = ", ".join(f"{u.package} {u.installed} -> {u.candidate}" for u in upgrades[:3])
    more = f" and {len(upgrades) - 3} more" if len(upgrades) > 3 else ""
    return f"{len(upgrades)} upstream package update(s), {security} from a security suite: {shown}{more}"


def decide(image: str, plan_id: str, plan_inputs: dict[str, Any], dev_build: str | None,
           dev_inputs: dict[str, Any] | None, plan_stored: bool, upgrades: list[Upgrade]) -> Decision:
    """``upgrades``: pending updates of the build the current inputs give (if stored), else of dev's build."""
    if upgrades:
        return Decision(Action.BAKE, (_upgrade_words(upgrades),))
    if dev_build is None:
        why = f"{image}@dev points at no build yet"
        if plan_stored:
            return Decision(Action.REUSE, (why, f"build {plan_id} of the current inputs is stored"))
        return Decision(Action.BAKE, (why,))
    if plan_id == dev_build:
        return Decision(Action.NO_CHANGE, (f"inputs and packages equal those of {image}@dev ({dev_build})",))
    changed = changed_inputs(plan_inputs, dev_inputs or {})
    why = f"changed since {image}@dev ({dev_build}): {', '.join(changed) or 'inputs'}"
    if plan_stored:
        return Decision(Action.REUSE, (why, f"build {plan_id} of the current inputs is already stored"))
    return Decision(Action.BAKE, (why,))
