"""Baking an image: plan it, return the stored build of identical inputs, or bake it with its
builder (DIB, or Packer for a ``builder: packer`` layer) through the one engine (toolkit.bake.attempt).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from toolkit.bake import cleanup
from toolkit.bake.attempt import BakeResult, bake_with
from toolkit.bake.dibbuild import BakeStepError, DibBuilder, resolve_mirrors
from toolkit.bake.plan import BakePlan, dib_version, plan_bake, snapshot_stamp
from toolkit.core.config import Settings
from toolkit.core.progress import Progress
from toolkit.image.spec import Builder, ImageSpec, load_image, load_layer
from toolkit.store import open_store
from toolkit.store.artifacts import Store

__all__ = ["BakeResult", "BakeStepError", "bake_image", "make_plan", "resolve_mirrors"]

log = logging.getLogger("golden.bake")


def make_plan(settings: Settings, spec: ImageSpec, store: Store, refresh: bool, rebuild: str = "") -> BakePlan:
    """The bake plan of ``spec`` with this machine's DIB and the image's snapshot stamp."""
    stamp = snapshot_stamp(store.snapshot(spec.name), refresh)
    return plan_bake(spec, settings.roles_dir, dib_version(), stamp, refresh=refresh,
                     project_elements=settings.project / "elements", rebuild=rebuild)


def bake_image(settings: Settings, name: str, *, force: bool = False, refresh: bool = False,
               root_cache: bool = True, progress: Progress | None = None) -> BakeResult:
    """Bake image spec ``name``, or return the stored build of identical inputs.

    ``force`` bakes the same inputs again under a new build id (a rebuild stamp joins the inputs):
    a stored build's bytes never change, whoever points at it.

    A bake starts from the cached pre-role root of its inputs when there is one (only roles, role
    vars or checks changed since it was captured; see toolkit.bake.rootcache), unless
    ``root_cache`` is off or it is ``force``d or a ``refresh``: those run every DIB phase and
    capture the root afresh. Either way the build id is the same.

    A ``builder: packer`` spec bakes its parent (``extends``) first, as any bake (a cache hit when
    it is stored), then boots that build's root in a QEMU machine (toolkit.bake.packerbuild).
    """
    started = time.monotonic()
    if progress:
        progress.phase("planning (hashing the inputs)")
    spec = load_image(name, settings.images_dir, settings.roles_dir)
    store = open_store(settings)
    store.preflight()  # a signing home's unusable key fails now, not at commit after the whole bake
    if spec.builder is Builder.PACKER:
        return _bake_packer(settings, spec, store, force=force, refresh=refresh, root_cache=root_cache,
                            progress=progress, started=started)

    def plan_for(rebuild: str) -> BakePlan:
        return make_plan(settings, spec, store, refresh, rebuild=rebuild)

    def execute(plan: BakePlan) -> BakeResult:
        builder = DibBuilder(settings, plan, use_root_cache=root_cache and not (force or refresh))
        return bake_with(builder, settings, store, plan, progress, started)

    return _cached_or_baked(store, spec.name, plan_for, execute, force=force, refresh=refresh,
                            progress=progress, started=started)


def _cached_or_baked(store: Store, image: str, plan_for: Callable[[str], BakePlan],
                     execute: Callable[[BakePlan], BakeResult], *, force: bool, refresh: bool,
                     progress: Progress | None, started: float) -> BakeResult:
    """The stored build of the plan's id, or ``execute`` under the image's store lock."""
    if not (force or refresh):
        hit = store.find(image, plan_for("").build_id)
        if hit is not None:
            if progress:
                progress.phase(f"cache hit: {hit.build_id} is already stored")
            return BakeResult(build=hit, cache_hit=True, seconds=time.monotonic() - started)
    with store.lock(image):
        # Re-plan under the lock: a bake that finished meanwhile may have moved the snapshot stamp.
        plan = plan_for(datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") if force else "")
        if not (force or refresh):
            hit = store.find(image, plan.build_id)
            if hit is not None:
                return BakeResult(build=hit, cache_hit=True, seconds=time.monotonic() - started)
        for stale in store.stale_staging(image):
            log.warning("removing %s left by an earlier bake that was killed", stale)
            cleanup.release(stale)
            store.discard(stale)
        return execute(plan)


def _bake_packer(settings: Settings, spec: ImageSpec, store: Store, *, force: bool, refresh: bool,
                 root_cache: bool, progress: Progress | None, started: float) -> BakeResult:
    from toolkit.bake import packerbuild  # only here: DIB bakes never pay for it

    layer = load_layer(spec.name, settings.images_dir)
    assert layer.extends is not None  # the spec model requires it of a packer layer
    opts = packerbuild.options(settings)
    version = packerbuild.packer_version(opts)  # before the parent's bake: a missing packer fails fast
    parent = bake_image(settings, layer.extends, refresh=refresh, root_cache=root_cache, progress=progress).build
    roles = packerbuild.machine_roles(spec, layer)

    def plan_for(rebuild: str) -> BakePlan:
        return plan_bake(spec, settings.roles_dir, str(parent.manifest.inputs.get("dib_version", "")),
                         str(parent.manifest.inputs["snapshot"]), project_elements=settings.project / "elements",
                         refresh=refresh, rebuild=rebuild, parent_build=parent.build_id, packer_version=version,
                         machine_roles=roles)

    def execute(plan: BakePlan) -> BakeResult:
        return bake_with(packerbuild.PackerBuilder(settings, plan, parent, opts), settings, store, plan, progress,
                         started)

    return _cached_or_baked(store, spec.name, plan_for, execute, force=force, refresh=refresh,
                            progress=progress, started=started)
