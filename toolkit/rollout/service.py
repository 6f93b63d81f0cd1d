"""Reimage as the CLI sees it: resolve inputs into a plan, execute or resume it, list runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toolkit.bmc.pool import BmcPool
from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.fleet.fleet import Fleet, open_fleet, rack_of
from toolkit.image.spec import CheckStage, ImageSpec
from toolkit.inventory.hosts import load_inventory
from toolkit.rollout.execute import Executor, ExecutorConfig, Progress, RunOutcome, resume_state
from toolkit.rollout.journal import Journal, RunRow, StepRow, new_run_id
from toolkit.rollout.plan import Amount, Candidate, Plan, Policy, Wave, plan_reimage
from toolkit.store.channels import channel_build, current_user


@dataclass(frozen=True)
class ReimageRequest:
    pattern: str
    image_ref: str  # name@channel or name@build-id
    policy: Policy
    inventory: str | None = None


def _split_ref(ref: str) -> tuple[str, str]:
    image, sep, what = ref.partition("@")
    if not sep or not image or not what:
        raise InputError(f"--image: expected <name>@<channel|build-id>, got {ref!r}")
    return image, what


def resolve_target(fleet: Fleet, image_ref: str) -> tuple[str, str, tuple[str, ...]]:
    """(image, build id, boot-stage check names) for ``name@channel`` or ``name@build-id``."""
    image, what = _split_ref(image_ref)
    build_id = channel_build(fleet.db, image, what) or what
    build = fleet.store.find(image, build_id)
    if build is None:
        raise InputError(f"--image {image_ref}: no channel {what!r} and no build {image}/{what} in the store",
                         hint=f"see: golden images; publish one with: golden publish {image} latest-bake --channel dev")
    spec = ImageSpec.model_validate(build.manifest.spec)
    checks = tuple(c.name for c in spec.checks if c.stage == CheckStage.BOOT)
    return image, build.build_id, checks


def plan_request(settings: Settings, req: ReimageRequest) -> tuple[Plan, tuple[str, ...]]:
    """Pure apart from reading state: the plan ``--dry-run`` prints and ``execute`` follows."""
    fleet = open_fleet(settings, req.inventory)
    image, build_id, checks = resolve_target(fleet, req.image_ref)
    hosts = load_inventory(fleet.inventory_path).select(req.pattern) if fleet.inventory_path else []
    status = {s.name: s for s in fleet.status(req.pattern)} if hosts else {}
    cands = [Candidate(h.name, rack_of(h), status[h.name].observed if h.name in status else None,
                       _observed_image(fleet, h.name)) for h in hosts]
    return plan_reimage(image, build_id, cands, req.policy), checks


def _observed_image(fleet: Fleet, name: str) -> str | None:
    with fleet.db.read() as repo:
        row = repo.get_host(name)
    return row.observed_image if row else None


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    d = dataclasses.asdict(plan)
    d["policy"] = {k: str(v) if isinstance(v, Amount) else v for k, v in dataclasses.asdict(plan.policy).items()}
    for k in ("wave_size", "max_unavailable", "max_failures"):
        v = getattr(plan.policy, k)
        d["policy"][k] = str(v) if v is not None else None
    return d


def plan_from_dict(d: dict[str, Any]) -> Plan:
    p = d["policy"]
    policy = Policy(
        canary=p["canary"], wave_size=Amount.parse(p["wave_size"], "wave_size"),
        max_unavailable=Amount.parse(p["max_unavailable"], "max_unavailable") if p["max_unavailable"] else None,
        max_failures=Amount.parse(p["max_failures"], "max_failures"), per_rack=p["per_rack"],
        boot_timeout_s=p["boot_timeout_s"], retries=p["retries"], include_current=p["include_current"],
    )
    return Plan(
        image=d["image"], target_build=d["target_build"], policy=policy,
        waves=tuple(Wave(w["index"], tuple(w["hosts"]), w["canary"]) for w in d["waves"]),
        moves={k: (v[0], v[1]) for k, v in d["moves"].items()}, unchanged=tuple(d["unchanged"]),
        failure_budget=d["failure_budget"], notes=tuple(d["notes"]),
        current_images=dict(d.get("current_images", {})),
    )


def _executor(settings: Settings, fleet: Fleet, journal: Journal, run_id: str, plan: Plan,
              checks: tuple[str, ...], on_progress: Callable[[Progress], None], pool: BmcPool) -> Executor:
    inv = load_inventory(fleet.inventory_path) if fleet.inventory_path else None
    hosts = {h.name: h for h in inv.hosts} if inv else {}
    missing = [h for h in plan.hosts if h not in hosts]
    if missing:
        raise InputError(f"host(s) no longer in the inventory: {', '.join(missing[:10])}")
    config = ExecutorConfig(boot_timeout_s=plan.policy.boot_timeout_s, retries=plan.policy.retries,
                            required_checks=checks)
    return Executor(run_id, plan, hosts, fleet, journal, pool, config, on_progress)


def execute_plan(settings: Settings, req: ReimageRequest, plan: Plan, checks: tuple[str, ...],
                 on_progress: Callable[[Progress], None] = lambda p: None,
                 on_start: Callable[[str], None] = lambda run_id: None, workers: int = 16) -> RunOutcome:
    fleet = open_fleet(settings, req.inventory)
    journal = Journal(fleet.db)
    run_id = new_run_id()
    journal.create_run(run_id, current_user(), req.pattern, plan.image, plan.target_build,
                       {"plan": plan_to_dict(plan), "checks": list(checks), "inventory": str(fleet.inventory_path)})
    on_start(run_id)
    with BmcPool(processes=workers) as pool:
        return _executor(settings, fleet, journal, run_id, plan, checks, on_progress, pool).run()


def resume_run(settings: Settings, run_id: str, inventory: str | None = None,
               on_progress: Callable[[Progress], None] = lambda p: None, workers: int = 16) -> RunOutcome:
    fleet0 = open_fleet(settings, inventory, required=False)
    journal = Journal(fleet0.db)
    run = journal.get_run(run_id)
    if run is None:
        raise InputError(f"no reimage run {run_id!r}", hint="list runs with: golden runs")
    if run.status != "running" and run.status != "interrupted":
        raise InputError(f"run {run_id} already finished ({run.status}): {run.summary}")
    inv = inventory or run.plan.get("inventory")
    fleet = open_fleet(settings, inv)
    plan = plan_from_dict(run.plan["plan"])
    tasks, finished = resume_state(journal.steps(run_id), plan.target_build, plan.moves, plan.current_images)
    with BmcPool(processes=workers) as pool:
        ex = _executor(settings, fleet, journal, run_id, plan, tuple(run.plan.get("checks", ())), on_progress, pool)
        return ex.run(resume=tasks, finished=finished)


def list_runs(settings: Settings, limit: int = 50) -> list[RunRow]:
    fleet = open_fleet(settings, None, required=False)
    return Journal(fleet.db).runs(limit)


def show_run(settings: Settings, run_id: str) -> tuple[RunRow, list[StepRow]]:
    fleet = open_fleet(settings, None, required=False)
    journal = Journal(fleet.db)
    run = journal.get_run(run_id)
    if run is None:
        raise InputError(f"no reimage run {run_id!r}", hint="list runs with: golden runs")
    return run, journal.steps(run_id)
