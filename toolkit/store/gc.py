"""Retention: which builds ``golden gc`` deletes, and why every other build stays.

Kept: the newest ``--keep`` of each image, every build a channel points at, the build each
channel would roll back to, and every build a host desires, was served, or reported running.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.state.db import Repo, StateDB
from toolkit.store.artifacts import Store
from toolkit.store.channels import ChannelError, rollback_target


@dataclass(frozen=True)
class GcItem:
    """A build and the reasons it is kept (none: it goes)."""
    image: str
    build_id: str
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class GcPlan:
    """What a garbage collection keeps and deletes, and the bytes it frees."""
    keep: tuple[GcItem, ...]
    delete: tuple[GcItem, ...]
    freed_bytes: int = 0
    deleted: tuple[str, ...] = field(default_factory=tuple)


def plan_gc(builds: dict[str, list[tuple[str, int]]], referenced: dict[tuple[str, str], list[str]],
            keep: int) -> GcPlan:
    """Which builds to delete: beyond the ``keep`` newest of each image and referenced by nothing.

    ``builds`` maps an image to its (build id, size) pairs newest first; ``referenced`` maps
    (image, build id) to why it must stay (channel, rollback target, host state).
    """
    if keep < 0:
        raise ChannelError("--keep must be 0 or more")
    kept: list[GcItem] = []
    doomed: list[GcItem] = []
    freed = 0
    for image in sorted(builds):
        for n, (build_id, size) in enumerate(builds[image]):
            why = list(referenced.get((image, build_id), []))
            if n < keep:
                why.insert(0, f"among the {keep} newest")
            if why:
                kept.append(GcItem(image, build_id, tuple(why)))
            else:
                doomed.append(GcItem(image, build_id))
                freed += size
    return GcPlan(tuple(kept), tuple(doomed), freed)


def _references(repo: Repo) -> dict[tuple[str, str], list[str]]:
    refs: dict[tuple[str, str], list[str]] = {}

    def add(image: str | None, build_id: str | None, why: str) -> None:
        if image and build_id:
            refs.setdefault((image, build_id), []).append(why)

    for ch in repo.list_channels():
        add(ch.image, ch.build_id, f"channel {ch.channel}")
        target = rollback_target(repo.history(ch.image, ch.channel))
        add(ch.image, target, f"rollback target of {ch.channel}")
    for h in repo.list_hosts():
        add(h.desired_image, h.desired_build, f"desired by {h.name}")
        add(h.observed_image or h.desired_image, h.observed_build, f"running on {h.name}")
        add(h.desired_image, h.served_build, f"served to {h.name}")
    return refs


def _gc_inputs(store: Store) -> dict[str, list[tuple[str, int]]]:
    return {
        image: [(b.build_id, sum(a.size for a in b.manifest.artifacts.values())) for b in store.builds(image)]
        for image in store.images()
    }


def gc(db: StateDB, store: Store, keep: int, *, dry_run: bool = False,
       extra_refs: dict[tuple[str, str], list[str]] | None = None) -> GcPlan:
    """Plan retention and (unless ``dry_run``) delete, holding the state write lock so no publish interleaves.

    ``extra_refs`` are more reasons to keep builds (e.g. the builds an inventory pins hosts to).
    """
    extra_refs = extra_refs or {}
    with db.write() as repo:
        refs = _references(repo)
        for k, v in extra_refs.items():
            refs.setdefault(k, []).extend(v)
        plan = plan_gc(_gc_inputs(store), refs, keep)
        if dry_run:
            return plan
        deleted = []
        for item in plan.delete:
            store.delete(item.image, item.build_id)
            deleted.append(f"{item.image}/{item.build_id}")
    return GcPlan(plan.keep, plan.delete, plan.freed_bytes, tuple(deleted))
