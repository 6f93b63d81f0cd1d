"""Reimage as the CLI sees it: resolve inputs into a plan, execute or resume it, list runs.

Leases: before acting, a run leases every host of its plan (``leases.py``); a second run over
overlapping hosts is refused with the other run's id, and a dead controller's leases lapse so any
controller can resume its run.

Gates: the target build must have passed its checks (as for promote) unless ``--force --reason``,
which is audited. Ctrl-C or SIGTERM marks the run ``interrupted`` in the journal (nothing is rolled
back; every step so far is recorded) and says how to resume it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toolkit.bmc.pool import BmcPool
from toolkit.bmc.tls import warn_unverified
from toolkit.core.config import Settings
from toolkit.core.errors import GateError, InputError, Interrupted
from toolkit.fleet.fleet import Fleet, open_fleet
from toolkit.fleet.slots import slot_states
from toolkit.fleet.staleness import check_policy, stale_policy
from toolkit.fleet.states import HW_CHANGED, NO_BUILD_STATES
from toolkit.fleet.status import rack_of
from toolkit.image.ref import parse_image_ref
from toolkit.image.spec import CheckStage, ImageSpec
from toolkit.install.settings import InstallMode
from toolkit.inventory.hosts import Host, InventoryError, load_inventory
from toolkit.inventory.selection import Selection, limit_of, vault_of
from toolkit.inventory.vault import GOLDEN_VAULT_ENV, VaultOptions
from toolkit.rollout.consolecap import ConsoleCapture
from toolkit.rollout.execute import Executor, ExecutorConfig, RunOutcome, WaveProgress, resume_state
from toolkit.rollout.hookrun import HookRunner
from toolkit.rollout.hooks import HookPlan, load_hooks, plan_hooks
from toolkit.rollout.journal import Journal, RunRow, RunStatus, StepRow, new_reimage_run_id
from toolkit.rollout.leases import LEASE_TTL_S, LeasedJournal, LeaseKeeper, new_holder, take_leases
from toolkit.rollout.plan import Amount, Candidate, Plan, Policy, Wave, plan_reimage
from toolkit.rollout.retire import CLEAN_EVENT, mark_cleaning, settle_cleaning
from toolkit.rollout.rotation import Rotation
from toolkit.runs.console import console_dir
from toolkit.store.channels import channel_build, check_gate, current_user
from toolkit.store.policy import LAB_BOOT

# A controller waits this long for a state database that went away (a PostgreSQL restart or
# failover) before it stops; the journal then says where every host stands, for --resume.
STATE_OUTAGE_WAIT_S = 300.0


@dataclass(frozen=True)
class ReimageRequest:
    """What ``golden reimage`` was asked: the hosts, the image reference, the policy."""
    pattern: str
    image_ref: str  # name@channel or name@build-id
    policy: Policy
    inventory: str | list[str] | None = None  # every -i source
    force: bool = False  # past the checks gate (needs reason; audited)
    reason: str = ""
    contest_window_s: float = 15.0
    lease_ttl_s: float = LEASE_TTL_S
    state: str | None = None  # only the selected hosts in this state (drifted, tainted, ...)
    stale: bool = False  # only the selected hosts breaking the staleness policy
    # Capture each host's console over SOL for its attempt (off with --no-capture-console).
    capture_console: bool = True
    retire: bool = False  # golden retire: the target is the cleaning image, a host is done on its clean report

    @property
    def by_state(self) -> bool:
        """True when hosts are chosen by their state rather than by pattern alone."""
        return self.state is not None or self.stale

    @property
    def label(self) -> str:
        """The selection as the journal records it: the pattern and its state selectors."""
        return " ".join([self.pattern, *([f"--state {self.state}"] if self.state else []),
                         *(["--stale"] if self.stale else [])])


def resolve_target(fleet: Fleet, image_ref: str, force: bool = False,
                   reason: str = "") -> tuple[str, str, tuple[str, ...], bool]:
    """(image, build id, boot-stage check names, forced) for ``name@channel`` or ``name@build-id``.

    GateError when the build has not passed its checks and ``force`` (with a reason) does not override.
    """
    ref = parse_image_ref(image_ref, "--image")
    image, what = ref.image, ref.ref
    build_id = channel_build(fleet.db, image, what) or what
    build = fleet.store.find(image, build_id)
    if build is None:
        raise InputError(f"--image {image_ref}: no channel {what!r} and no build {image}/{what} in the store",
                         hint=f"see: golden images; publish one with: golden publish {image} latest-bake --channel dev")
    forced = check_gate(image, build, "reimaging hosts onto it", force, reason)
    spec = ImageSpec.model_validate(build.manifest.spec)
    checks = tuple(c.name for c in spec.checks if c.stage == CheckStage.BOOT)
    return image, build.build_id, checks, forced


def select_by_state(fleet: Fleet, settings: Settings, req: ReimageRequest, hosts: list[Host]) -> list[Host]:
    """The hosts of ``hosts`` in ``req.state`` and/or breaking the staleness policy (``req.stale``)."""
    policy = check_policy(stale_policy(settings)) if req.stale else None
    status = {s.name: s for s in fleet.status(req.pattern, policy)}
    return [h for h in hosts if h.name in status
            and (req.state is None or status[h.name].state == req.state
                 or (req.state == HW_CHANGED and bool(status[h.name].hw_changed)))
            and (not req.stale or bool(status[h.name].stale))]


def image_of_selection(hosts: list[Host]) -> str:
    """The one image reference the selected hosts follow, for a reimage by state without --image."""
    refs = sorted({h.image for h in hosts if h.image})
    if len(refs) != 1:
        raise InputError(f"the selected hosts follow {len(refs)} images ({', '.join(refs[:5]) or 'none'})",
                         hint="pass --image NAME@CHANNEL or narrow the host pattern")
    return refs[0]


def plan_request(settings: Settings, req: ReimageRequest, hooks: bool = True) -> tuple[Plan, tuple[str, ...]]:
    """Pure apart from reading state: the plan ``--dry-run`` prints and ``execute`` follows.

    With a state selector (``--state``, ``--stale``) only those hosts are planned, onto the build
    they follow (or ``--image``), even when they already run it: a tainted host is reimaged in place.
    """
    fleet = open_fleet(settings, req.inventory)
    inv = fleet.inventory()
    hosts = inv.select(req.pattern) if inv else []
    if req.by_state:
        hosts = select_by_state(fleet, settings, req, hosts)
        if not hosts:
            what = " and ".join(([f"in state {req.state}"] if req.state else []) + (["stale"] if req.stale else []))
            raise InputError(f"no host of {req.pattern!r} is {what}", hint="golden fleet shows each host's state")
        req = dataclasses.replace(req, image_ref=req.image_ref or image_of_selection(hosts),
                                  policy=dataclasses.replace(req.policy, include_current=True))
    image, build_id, checks, _ = resolve_target(fleet, req.image_ref, req.force, req.reason)
    if not req.retire:
        refuse_retired(fleet, req.pattern, hosts)
    if inv:
        inv.require_bmc(hosts)  # a host without a BMC fails the plan, before any BMC is contacted
    status = {s.name: s for s in fleet.status(req.pattern)} if hosts else {}
    selected = {h.name for h in hosts}
    slots = slot_states(fleet.db) if any(h.install == InstallMode.DISK for h in hosts) else {}
    cands = [Candidate(h.name, rack_of(h), status[h.name].observed if h.name in status else None,
                       fleet.observed_image(h.name), disk=h.install == InstallMode.DISK, uefi=h.uefi,
                       active_slot=slots[h.name].active if h.name in slots else None)
             for h in hosts if h.name in selected]
    plan = plan_reimage(image, build_id, cands, req.policy)
    return (with_hooks(plan, settings, fleet) if hooks else plan), checks


def refuse_disk_installs(plan: Plan) -> None:
    """InputError while the plan holds disk hosts: their installer does not exist yet (issue 26), and
    netbooting them into RAM would report "done" for an install that never happened."""
    if plan.slots:
        hosts = sorted(plan.slots)
        raise InputError(f"install: disk is planned but not carried out yet: {', '.join(hosts[:10])}"
                         f"{f' and {len(hosts) - 10} more' if len(hosts) > 10 else ''} would boot in RAM",
                         hint="reimage --dry-run shows the slot each would write; set install: ram to reimage now")


def refuse_retired(fleet: Fleet, pattern: str, hosts: list[Host]) -> None:
    """GateError when a selected host is being retired or its clean failed: it gets no build until cleared."""
    states = {s.name: s.state for s in fleet.status(pattern)} if hosts else {}
    held = [f"{h.name} ({states[h.name]})" for h in hosts if states.get(h.name) in NO_BUILD_STATES]
    if held:
        raise GateError(f"refused by the retire gate: {', '.join(held[:10])} must not be given a build "
                        "(a retire is under way or its clean failed)",
                        hint="erase again with golden retire HOST --reason ..., or after acting: "
                             "golden retire --clear HOST --reason ...")


def with_hooks(plan: Plan, settings: Settings, fleet: Fleet) -> Plan:
    """The plan with golden.yaml's ``rollout.hooks`` as they apply to its hosts, and a note per budget.

    Groups are matched in the whole inventory, not the ``--limit``ed one: a percentage is of every
    host the pattern matches, and a pattern that matches none is an error (never "no hooks")."""
    hooks = load_hooks(settings.extra.get("rollout"), settings.project)
    limited = fleet.inventory()
    if not hooks or limited is None:
        return plan
    whole = limited if fleet.limit is None else load_inventory(
        fleet.inventory_sources, vault=fleet.vault, cache_dir=fleet.cache_dir)

    def select(pattern: str) -> set[str]:
        try:
            return {h.name for h in whole.select(pattern)}
        except InventoryError:
            return set()  # plan_hooks refuses the pattern with the hook's own path

    hp = plan_hooks(hooks, select, plan.hosts)
    notes = [f"hosts {g.key}: at most {g.budget} of {len(g.members)} out of rotation at once (max_unavailable)"
             for g in hp.groups if g.budget is not None and g.members & set(plan.hosts)]
    return dataclasses.replace(plan, hooks=hp, notes=(*plan.notes, *notes))


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as JSON data (what the journal stores)."""
    d = dataclasses.asdict(dataclasses.replace(plan, hooks=None))
    d["hooks"] = plan.hooks.to_dict() if plan.hooks else None
    d["policy"] = {k: str(v) if isinstance(v, Amount) else v for k, v in dataclasses.asdict(plan.policy).items()}
    for k in ("wave_size", "max_unavailable", "max_failures"):
        v = getattr(plan.policy, k)
        d["policy"][k] = str(v) if v is not None else None
    return d


def plan_from_dict(d: dict[str, Any]) -> Plan:
    """The plan read back from ``plan_to_dict``'s data."""
    p = d["policy"]
    policy = Policy(
        canary=p["canary"], wave_size=Amount.parse(p["wave_size"], "wave_size"),
        max_unavailable=Amount.parse(p["max_unavailable"], "max_unavailable") if p["max_unavailable"] else None,
        max_failures=Amount.parse(p["max_failures"], "max_failures"), per_rack=p["per_rack"],
        boot_timeout_s=p["boot_timeout_s"], retries=p["retries"], include_current=p["include_current"],
        rollback=p.get("rollback", True),
    )
    return Plan(
        image=d["image"], target_build=d["target_build"], policy=policy,
        waves=tuple(Wave(w["index"], tuple(w["hosts"]), w["canary"]) for w in d["waves"]),
        moves={k: (v[0], v[1]) for k, v in d["moves"].items()}, unchanged=tuple(d["unchanged"]),
        failure_budget=d["failure_budget"], notes=tuple(d["notes"]),
        current_images=dict(d.get("current_images", {})),
        hooks=HookPlan.from_dict(d.get("hooks")) if d.get("hooks") else None,
        slots=dict(d.get("slots", {})),
    )


def _executor(settings: Settings, fleet: Fleet, journal: Journal, run_id: str, plan: Plan,
              checks: tuple[str, ...], on_progress: Callable[[WaveProgress], None], pool: BmcPool,
              contest_window_s: float, report_kind: str = "report", capture: bool = False) -> Executor:
    inv = fleet.inventory()
    hosts = {h.name: h for h in inv.hosts} if inv else {}
    if inv:
        inv.open_passwords(hosts[name] for name in plan.hosts if name in hosts)
        warn_unverified(hosts[name].endpoint for name in plan.hosts if name in hosts)
    missing = [h for h in plan.hosts if h not in hosts]
    if missing:
        raise InputError(f"host(s) no longer in the inventory: {', '.join(missing[:10])}")
    config = ExecutorConfig(boot_timeout_s=plan.policy.boot_timeout_s, retries=plan.policy.retries,
                            required_checks=checks, contest_window_s=contest_window_s, report_kind=report_kind)
    ex = Executor(run_id, plan, hosts, fleet, journal, pool, config, on_progress,
                  consoles=ConsoleCapture(console_dir(settings.runs_dir, run_id)) if capture else None)
    if ex.consoles is not None:
        ex.consoles.prepare()
    if plan.hooks and plan.hooks.by_host:
        # The vault options golden was given (ANSIBLE_VAULT_* reach ansible-playbook by its environment).
        vault = fleet.vault or VaultOptions()
        files = [*vault.password_files, *([os.environ[GOLDEN_VAULT_ENV]] if os.environ.get(GOLDEN_VAULT_ENV) else [])]
        ex.hooks = HookRunner(plan.hooks, settings.project, [str(p) for p in fleet.inventory_sources],
                              settings.runs_dir / run_id / "hooks", run_id, list(vault.vault_ids), files)
        ex.rotation = Rotation(fleet.db, plan.hooks, run_id)
    return ex


class RunInterrupted(Interrupted):
    """A reimage run stopped by Ctrl-C or SIGTERM; its journal says where every host stands."""


def _interrupted(journal: Journal, run_id: str, ex: Executor | None) -> RunInterrupted:
    wave = f" in wave {ex.current_wave + 1}" if ex is not None else ""
    out = sorted(ex.drained) if ex is not None else []
    drained = f"; out of rotation until resumed: {', '.join(out)}" if out else ""
    summary = (f"interrupted{wave}; every step so far is in the journal, nothing was rolled back{drained}; "
               f"resume with: golden reimage --resume {run_id}")
    journal.set_status(run_id, RunStatus.INTERRUPTED, summary)
    return RunInterrupted(f"reimage run {run_id} {summary}",
                          hint="hosts whose power cycle had started are not cycled again for the same attempt")


def _run(journal: Journal, run_id: str, make: Callable[[], Executor], **kw: Any) -> RunOutcome:
    ex: Executor | None = None
    try:
        ex = make()
        outcome = ex.run(**kw)
    except KeyboardInterrupt:
        raise _interrupted(journal, run_id, ex) from None
    finally:
        if ex is not None and ex.consoles is not None:
            ex.consoles.close()
    _record_lab_boot(ex, outcome)
    if ex.config.report_kind == CLEAN_EVENT:
        settle_cleaning(ex.fleet, outcome.results, ex.errors)
    return outcome


def _record_lab_boot(ex: Executor, outcome: RunOutcome) -> None:
    """A run that reimaged only lab machines is the build's lab boot test (a promotion gate)."""
    hosts = [ex.hosts[h] for h in ex.plan.hosts]
    if ex.config.report_kind == CLEAN_EVENT or not hosts or not all(h.vars.get("golden_lab") is True for h in hosts):
        return
    passed = outcome.status == RunStatus.SUCCEEDED and all(r == "done" for r in outcome.results.values())
    with ex.fleet.db.write() as repo:
        repo.record_gate(ex.plan.image, ex.plan.target_build, LAB_BOOT, passed, time.time(),
                         json.dumps({"run": outcome.run_id, "summary": outcome.summary}))


def execute_plan(settings: Settings, req: ReimageRequest, plan: Plan, checks: tuple[str, ...],
                 on_progress: Callable[[WaveProgress], None] = lambda p: None,
                 on_start: Callable[[str], None] = lambda run_id: None, workers: int = 16) -> RunOutcome:
    """Carry out ``plan``: the promotion gate again, leases, journal, waves."""
    refuse_disk_installs(plan)
    fleet = open_fleet(settings, req.inventory)
    image_ref = req.image_ref or f"{plan.image}@{plan.target_build}"  # by state: the build the plan chose
    _, _, _, forced = resolve_target(fleet, image_ref, req.force, req.reason)  # the gate, again at acting time
    run_id = new_reimage_run_id()
    holder = new_holder()
    fleet.db.reconnect_s = STATE_OUTAGE_WAIT_S
    take_leases(fleet.db, plan.hosts, run_id, holder, req.lease_ttl_s)  # before the journal: a refusal leaves no run
    journal = LeasedJournal(fleet.db, holder)
    with LeaseKeeper(fleet.db, holder, req.lease_ttl_s):
        user = current_user()
        journal.create_run(run_id, user, req.label, plan.image, plan.target_build,
                           {"plan": plan_to_dict(plan), "checks": list(checks),
                            "inventory": [str(p) for p in fleet.inventory_sources],
                            "forced": forced, "reason": req.reason, "contest_window_s": req.contest_window_s,
                            "retire": req.retire, "capture_console": req.capture_console})
        if req.retire:
            mark_cleaning(fleet, plan.hosts, user, req.reason, run_id)  # before any BMC call: fail closed
        if forced:
            with fleet.db.write() as repo:
                repo.add_audit(time.time(), user, "reimage-forced", f"{plan.image}/{plan.target_build}", req.reason,
                               json.dumps({"run": run_id, "pattern": req.pattern, "hosts": len(plan.hosts)}))
        on_start(run_id)
        kind = CLEAN_EVENT if req.retire else "report"
        with BmcPool(processes=workers) as pool:
            return _run(journal, run_id, lambda: _executor(settings, fleet, journal, run_id, plan, checks,
                                                            on_progress, pool, req.contest_window_s, kind,
                                                            req.capture_console))


def resume_run(settings: Settings, run_id: str, inventory: str | list[str] | None = None,
               on_progress: Callable[[WaveProgress], None] = lambda p: None, workers: int = 16,
               lease_ttl_s: float = LEASE_TTL_S) -> RunOutcome:
    """Resume run ``run_id`` from its journal."""
    fleet0 = open_fleet(settings, inventory, required=False)
    journal = Journal(fleet0.db)
    run = journal.get_run(run_id)
    if run is None:
        raise InputError(f"no reimage run {run_id!r}", hint="list runs with: golden runs")
    if run.status != "running" and run.status != "interrupted":
        raise InputError(f"run {run_id} already finished ({run.status}): {run.summary}")
    inv: Any = inventory
    if not inventory:  # no -i: the run's own sources, with whatever --limit and vault options were given
        recorded = run.plan.get("inventory")  # a list of sources (older runs: one path)
        sources = recorded if isinstance(recorded, list) else [recorded] if recorded else []
        inv = Selection(sources, limit_of(inventory), vault_of(inventory))
    fleet = open_fleet(settings, inv)
    plan = plan_from_dict(run.plan["plan"])
    tasks, finished = resume_state(journal.steps(run_id), plan.target_build, plan.moves, plan.current_images)
    holder = new_holder()
    fleet.db.reconnect_s = STATE_OUTAGE_WAIT_S
    take_leases(fleet.db, plan.hosts, run_id, holder, lease_ttl_s)  # a live controller still driving it refuses us
    journal = LeasedJournal(fleet.db, holder)
    with LeaseKeeper(fleet.db, holder, lease_ttl_s):
        journal.set_status(run_id, RunStatus.RUNNING, f"resumed by {current_user()}")
        checks = tuple(run.plan.get("checks", ()))
        window = float(run.plan.get("contest_window_s", 15.0))
        kind = CLEAN_EVENT if run.plan.get("retire") else "report"
        capture = bool(run.plan.get("capture_console", False))  # runs from before capture was on by default: off
        with BmcPool(processes=workers) as pool:
            return _run(journal, run_id, lambda: _executor(settings, fleet, journal, run_id, plan, checks,
                                                            on_progress, pool, window, kind, capture),
                        resume=tasks, finished=finished)


def show_run(settings: Settings, run_id: str) -> tuple[RunRow, list[StepRow]]:
    """The run and its steps; InputError when there is no such run."""
    fleet = open_fleet(settings, None, required=False)
    journal = Journal(fleet.db)
    run = journal.get_run(run_id)
    if run is None:
        raise InputError(f"no reimage run {run_id!r}", hint="list runs with: golden runs")
    return run, journal.steps(run_id)
