"""Drain / verify / undrain hooks: the golden.yaml section, group budgets, and the order of a host's steps.

The executor runs here with fake BMCs and a fake hook runner that logs into the same list as the
BMCs, over a real state database (SQLite, then PostgreSQL), so the order of every action and the
budget rows two controllers would share are what is checked.
"""

# ruff: noqa: F811 - ``world`` is the fixture imported from test_rollout_execute; tests take it by name
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.unit.test_rollout_execute import world  # noqa: F401 - the shared fake fleet fixture
from toolkit.core.errors import InputError
from toolkit.rollout.execute import Executor, ExecutorConfig, HostResult, resume_state
from toolkit.rollout.hookrun import HookCall
from toolkit.rollout.hooks import Group, Hook, HookPlan, load_hooks, plan_hooks
from toolkit.rollout.journal import Phase, RunStatus, Step
from toolkit.rollout.plan import Amount, Candidate, Policy, plan_reimage
from toolkit.rollout.rotation import Rotation, decide_admission
from toolkit.state.db import StepRow
from toolkit.state.rotation import RotationRow

# ---- the golden.yaml section: (section, the one line it must give) ----

BAD_SECTIONS: list[tuple[str, object, str]] = [
    ("unknown-hook-key", {"hooks": [{"hosts": "web", "drain": "pb/drain.yml", "drian": "x"}]},
     "golden.yaml: .rollout.hooks[0].drian: unknown key"),
    ("unknown-section-key", {"hookz": []}, "golden.yaml: .rollout.hookz: unknown key"),
    ("hooks-not-a-list", {"hooks": "web"}, "golden.yaml: .rollout.hooks: Input should be a valid list"),
    ("missing-hosts", {"hooks": [{"drain": "pb/drain.yml"}]}, "golden.yaml: .rollout.hooks[0].hosts: Field required"),
    ("missing-playbook", {"hooks": [{"hosts": "web", "verify": "pb/nope.yml"}]},
     "golden.yaml: .rollout.hooks[0].verify: no playbook pb/nope.yml"),
    ("playbook-is-a-folder", {"hooks": [{"hosts": "web", "drain": "pb"}]}, ".rollout.hooks[0].drain: no playbook pb"),
    ("empty-pattern", {"hooks": [{"hosts": "  ", "drain": "pb/drain.yml"}]},
     ".rollout.hooks[0].hosts: empty host pattern"),
    ("pattern-with-space", {"hooks": [{"hosts": "web app", "drain": "pb/drain.yml"}]},
     "'web app' is not an Ansible host pattern"),
    ("pattern-with-shell", {"hooks": [{"hosts": "web;reboot", "drain": "pb/drain.yml"}]},
     "'web;reboot' is not an Ansible host pattern"),
    ("pattern-unbalanced", {"hooks": [{"hosts": "web[0:3", "drain": "pb/drain.yml"}]}, "has unbalanced brackets"),
    ("budget-zero", {"hooks": [{"hosts": "web", "max_unavailable": 0}]},
     ".rollout.hooks[0].max_unavailable: 0 lets no host out of rotation"),
    ("budget-zero-percent", {"hooks": [{"hosts": "web", "max_unavailable": "0%"}]}, "'0%' lets no host out"),
    ("budget-negative", {"hooks": [{"hosts": "web", "max_unavailable": -1}]},
     ".rollout.hooks[0].max_unavailable: expected a whole number or a percentage like 10%, got '-1'"),
    ("budget-over-100", {"hooks": [{"hosts": "web", "max_unavailable": "150%"}]},
     "a percentage must be between 0% and 100%, got '150%'"),
    ("budget-words", {"hooks": [{"hosts": "web", "max_unavailable": "half"}]}, "got 'half'"),
    ("budget-bool", {"hooks": [{"hosts": "web", "max_unavailable": True}]},
     ".rollout.hooks[0].max_unavailable.int: Input should be a valid integer"),
    ("timeout-no-unit", {"hooks": [{"hosts": "web", "verify": "pb/verify.yml", "timeout": "90"}]},
     ".rollout.hooks[0].timeout needs a unit (s, m or h), like 5m; got '90'"),
    ("timeout-number", {"hooks": [{"hosts": "web", "verify": "pb/verify.yml", "timeout": 90}]},
     ".rollout.hooks[0].timeout: Input should be a valid string"),
    ("timeout-zero", {"hooks": [{"hosts": "web", "verify": "pb/verify.yml", "timeout": "0s"}]},
     ".rollout.hooks[0].timeout must be between 1s and 1d, got 0s"),
    ("timeout-too-long", {"hooks": [{"hosts": "web", "verify": "pb/verify.yml", "timeout": "2d"}]}, "got 2d"),
    ("settle-no-unit", {"hooks": [{"hosts": "web", "verify": "pb/verify.yml", "settle": "10"}]},
     ".rollout.hooks[0].settle needs a unit (s, m or h), like 5m; got '10'"),
    ("does-nothing", {"hooks": [{"hosts": "web"}]}, ".rollout.hooks[0]: names no playbook and no max_unavailable"),
    ("drain-without-undrain", {"hooks": [{"hosts": "web", "drain": "pb/drain.yml"}]},
     ".rollout.hooks[0]: has a drain playbook but no undrain one; a host drained must have a way back"),
    ("undrain-without-drain", {"hooks": [{"hosts": "web", "undrain": "pb/undrain.yml"}]},
     ".rollout.hooks[0]: has a undrain playbook but no drain one"),
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pb").mkdir()
    for name in ("drain", "verify", "undrain"):
        (tmp_path / "pb" / f"{name}.yml").write_text("- hosts: all\n  tasks: []\n")
    return tmp_path


@pytest.mark.parametrize(("case", "section", "message"), BAD_SECTIONS, ids=[c[0] for c in BAD_SECTIONS])
def test_bad_hook_sections_are_one_line_input_errors(project: Path, case: str, section: object, message: str) -> None:
    with pytest.raises(InputError) as err:
        load_hooks(section, project)
    assert message in err.value.message
    assert "\n" not in err.value.message and err.value.exit_code == 2


def test_a_good_section_resolves_paths_units_and_budgets(project: Path) -> None:
    hooks = load_hooks({"hooks": [
        {"hosts": "web", "drain": "pb/drain.yml", "verify": "pb/verify.yml", "undrain": "pb/undrain.yml",
         "timeout": "2m", "settle": "10s", "max_unavailable": "25%"},
        {"hosts": "rack1:&web", "max_unavailable": 1}]}, project)
    # paths as written (checked against this project): a resume elsewhere resolves them in its own
    assert hooks[0] == Hook(0, "web", Path("pb/drain.yml"), Path("pb/verify.yml"), Path("pb/undrain.yml"),
                            120.0, 10.0, Amount(25, percent=True))
    assert hooks[1] == Hook(1, "rack1:&web", timeout_s=300.0, max_unavailable=Amount(1))
    assert load_hooks(None, project) == ()
    assert Hook.from_dict(hooks[0].to_dict()) == hooks[0]


# ---- budgets: overlapping groups, percentages, admission ----

GROUPS = {"web": {"a", "b", "c", "d"}, "rack1": {"a", "e"}, "all": {"a", "b", "c", "d", "e"}}


def _hooks(*specs: tuple[str, str | None, bool]) -> tuple[Hook, ...]:
    return tuple(Hook(i, pat, drain=Path("/d.yml") if drain else None,
                      max_unavailable=Amount.parse(mu, "max_unavailable") if mu else None)
                 for i, (pat, mu, drain) in enumerate(specs))


@pytest.mark.parametrize(("specs", "budgets"), [
    ([("web", "1", True)], {"web": 1}),
    ([("web", "50%", True)], {"web": 2}),  # of the 4 hosts web matches in the inventory, not of the selection
    ([("web", "10%", True)], {"web": 1}),  # rounded down, but at least 1: a group can always move
    ([("web", "100%", True)], {"web": 4}),
    ([("web", "3", True), ("web", "1", False)], {"web": 1}),  # two entries for one pattern: the stricter
    ([("web", None, True), ("rack1", "1", False)], {"web": None, "rack1": 1}),
])
def test_group_budgets(specs, budgets) -> None:
    plan = plan_hooks(_hooks(*specs), lambda p: set(GROUPS[p]), ["a", "b"])
    assert {g.key: g.budget for g in plan.groups} == budgets


def test_a_pattern_that_matches_no_host_is_an_error_not_no_hooks() -> None:
    with pytest.raises(InputError) as err:
        plan_hooks(_hooks(("wbe", "1", True)), lambda p: set(), ["a"])
    assert err.value.message == "golden.yaml: .rollout.hooks[0].hosts: 'wbe' matches no host of the inventory"


def test_hosts_of_several_groups_run_every_hook_and_undrain_in_reverse() -> None:
    hooks = (Hook(0, "web", drain=Path("/lb.yml"), undrain=Path("/lb-on.yml")),
             Hook(1, "rack1", drain=Path("/bgp.yml"), undrain=Path("/bgp-on.yml"), max_unavailable=Amount(1)))
    plan = plan_hooks(hooks, lambda p: set(GROUPS[p]), ["a", "b"])
    assert [str(p) for _, p in plan.playbooks("a", "drain")] == ["/lb.yml", "/bgp.yml"]
    assert [str(p) for _, p in plan.playbooks("a", "undrain")] == ["/bgp-on.yml", "/lb-on.yml"]
    assert [str(p) for _, p in plan.playbooks("b", "drain")] == ["/lb.yml"]
    assert plan.playbooks("e", "drain") == []  # not selected: no hooks
    assert HookPlan.from_dict(plan.to_dict()) == plan


def _row(host: str, grp: str, run: str = "other", state: str = "out") -> RotationRow:
    return RotationRow(host, grp, run, state, 1.0, "")


ADMISSION: list[tuple[str, dict[str, int | None], list[str], list[RotationRow], list[str], list[tuple[str, str]]]] = [
    # (case, group budgets, hosts asked, rows held, admitted, [(blocked host, by group)])
    ("room-for-all", {"web": 2}, ["a", "b"], [], ["a", "b"], []),
    ("admitted-count-for-the-next", {"web": 1}, ["a", "b"], [], ["a"], [("b", "web")]),
    ("held-by-another-run", {"web": 1}, ["a"], [_row("c", "web")], [], [("a", "web")]),
    ("left-out-by-failure-holds", {"web": 1}, ["a"], [_row("c", "web", state="left")], [], [("a", "web")]),
    ("own-row-never-counts", {"web": 1}, ["a"], [_row("a", "web", state="left")], ["a"], []),
    ("stricter-group-wins", {"web": 3, "rack1": 1}, ["a", "b"], [_row("e", "rack1")], ["b"], [("a", "rack1")]),
    ("no-budget-group-never-blocks", {"web": None}, ["a", "b"], [_row("c", "web")], ["a", "b"], []),
    ("other-group-unaffected", {"web": 1, "rack1": 1}, ["b"], [_row("e", "rack1")], ["b"], []),
]


@pytest.mark.parametrize(("case", "budgets", "hosts", "rows", "admitted", "blocked"), ADMISSION,
                         ids=[c[0] for c in ADMISSION])
def test_admission(case, budgets, hosts, rows, admitted, blocked) -> None:
    groups = tuple(Group(k, frozenset(GROUPS[k]), b) for k, b in budgets.items())
    by_host = {h: tuple(i for i, g in enumerate(groups) if h in g.members) for h in "abcde"}
    hooks = tuple(Hook(i, g.key, drain=Path("/d.yml")) for i, g in enumerate(groups))
    plan = HookPlan(hooks, groups, by_host)
    ok, no = decide_admission(plan, hosts, rows, "this")
    assert ok == admitted
    assert [(b.host, b.group) for b in no] == blocked


# ---- the executor: order of steps per host, failures, budgets ----

class FakeHooks:
    """Runs no playbook: logs (host, kind:build) into the BMC log and fails where told."""

    def __init__(self, plan: HookPlan, log: list[tuple[str, str]], fail: dict[tuple[str, str], str]) -> None:
        self.plan, self.log, self.fail = plan, log, fail
        self.calls: list[HookCall] = []
        self.times: list[tuple[str, str, float]] = []

    def has(self, host: str, kind: str) -> bool:
        return bool(self.plan.playbooks(host, kind))

    def run(self, call: HookCall) -> str:
        self.calls.append(call)
        self.times.append((call.host, call.kind, time.time()))
        self.log.append((call.host, f"{call.kind}:{call.build}"))
        time.sleep(0.01)
        return self.fail.get((call.kind, call.build), "")


def _executor(world, target: str, current: str | None, *, budget: int | None = None, retries: int = 0,
              fail: dict[tuple[str, str], str] | None = None, canary: int = 1, wave: int = 3, run_id: str = "",
              drain: bool = True) -> tuple[Executor, FakeHooks]:
    fleet, hosts, journal, pool, log = world
    cands = [Candidate(n, "rack1", current) for n in sorted(hosts)]
    plan = plan_reimage("web", target, cands, Policy(canary=canary, wave_size=Amount(wave)))
    hooks = (Hook(0, "rack1", drain=Path("/d.yml") if drain else None, verify=Path("/v.yml"),
                  undrain=Path("/u.yml") if drain else None,
                  max_unavailable=Amount(budget) if budget else None),)
    hp = plan_hooks(hooks, lambda p: set(hosts), sorted(hosts))
    run_id = run_id or f"run-{target}"
    journal.create_run(run_id, "test", "all", "web", target, {})
    ex = Executor(run_id, plan, hosts, fleet, journal, pool,
                  ExecutorConfig(boot_timeout_s=5, retries=retries, required_checks=("http-ok",), tick=0.05,
                                 contest_window_s=0.2))
    fake = FakeHooks(hp, log, fail or {})
    ex.hooks = fake  # type: ignore[assignment]
    ex.rotation = Rotation(fleet.db, hp, run_id)
    return ex, fake


def _per_host(log: list[tuple[str, str]], host: str) -> list[str]:
    return [a for h, a in log if h == host]


def _rows(world) -> list[RotationRow]:
    with world[0].db.read() as repo:
        return repo.rotation_rows()


def test_each_host_drains_before_its_bmc_and_returns_only_after_verify(world) -> None:
    ex, _ = _executor(world, "B", "A")
    out = ex.run()
    assert out.status == RunStatus.SUCCEEDED and set(out.results.values()) == {"done"}
    for host in ("n0", "n1", "n2"):
        assert _per_host(world[4], host) == ["drain:B", "bootdev-pxe", "on", "verify:B", "undrain:B"]
    assert _rows(world) == []  # every host back in rotation


def test_a_failed_verify_keeps_the_host_out_rolls_it_back_and_returns_it_verified(world) -> None:
    # D passes the image's own boot checks (the fake fleet fails C's): only the verify from outside fails it
    ex, _ = _executor(world, "D", "B", fail={("verify", "D"): "task 'Check the page' failed: 500"})
    out = ex.run()
    canary = next(h for h, r in out.results.items() if r == HostResult.ROLLED_BACK.value)
    assert _per_host(world[4], canary) == ["drain:D", "bootdev-pxe", "on", "verify:D",
                                           "bootdev-pxe", "cycle", "verify:B", "undrain:B"]
    assert out.status == RunStatus.FAILED
    assert "canary failed on" in out.summary and "verify failed: task 'Check the page' failed: 500" in out.summary
    assert {h for h, _ in world[4]} == {canary}  # nobody else touched
    assert _rows(world) == []


def test_a_host_whose_rollback_does_not_verify_is_left_drained_holding_its_budget(world) -> None:
    ex, _ = _executor(world, "D", "B", fail={("verify", "D"): "500", ("verify", "B"): "503"}, budget=1)
    out = ex.run()
    [canary] = [h for h, r in out.results.items() if r == HostResult.FAILED.value]
    assert "undrain:B" not in _per_host(world[4], canary)
    [row] = _rows(world)
    assert (row.host, row.state) == (canary, "left") and "503" in row.detail
    states = {s.name: s for s in world[0].status()}
    assert states[canary].state == "drained"
    assert states[canary].rotation == "left out of rotation: verify failed: 500; rollback failed: verify failed: 503"


def test_a_failed_drain_is_never_power_cycled_nor_retried(world) -> None:
    ex, _ = _executor(world, "B", "A", fail={("drain", "B"): "lb unreachable"}, retries=2)
    out = ex.run()
    canary = next(iter(out.results))
    assert _per_host(world[4], canary) == ["drain:B"]
    assert out.results[canary] == HostResult.FAILED.value and out.status == RunStatus.FAILED
    assert "drain failed, so it was not power-cycled: lb unreachable" in out.summary


def test_a_failed_undrain_is_not_rolled_back(world) -> None:
    ex, _ = _executor(world, "B", "A", fail={("undrain", "B"): "socket gone"}, retries=1)
    out = ex.run()
    canary = next(h for h, r in out.results.items() if r == HostResult.FAILED.value)
    assert _per_host(world[4], canary) == ["drain:B", "bootdev-pxe", "on", "verify:B", "undrain:B"]
    assert [r.state for r in _rows(world)] == ["left"]


def test_the_group_budget_holds_within_a_wave(world) -> None:
    ex, _ = _executor(world, "B", "A", budget=1, canary=0, wave=3)
    out = ex.run()
    assert out.status == RunStatus.SUCCEEDED
    order = [(h, a.split(":")[0]) for h, a in world[4] if a.startswith(("drain", "undrain"))]
    out_now = 0
    for _, kind in order:
        out_now += 1 if kind == "drain" else -1
        assert out_now <= 1, order
    assert len(order) == 6


def test_a_budget_held_only_by_failures_stops_the_run_and_names_them(world) -> None:
    with world[0].db.write() as repo:  # n9, of the same group, was left out by an earlier run's failure
        repo.hold_rotation("n9", ["rack1"], "an-old-run", 1.0)
        repo.leave_rotation("n9", "verify failed", 1.0)
    ex, _ = _executor(world, "B", "A", budget=1, canary=0)
    started = time.monotonic()
    out = ex.run()
    assert time.monotonic() - started < 3  # it did not wait for a place nobody will free
    assert out.status == RunStatus.FAILED
    assert "no host can go out of rotation: group 'rack1' allows 1 host(s) out of rotation and has " \
           "n9 (left out: verify failed)" in out.summary
    assert world[4] == []  # no drain, no BMC call
    assert set(out.results.values()) == {HostResult.NOT_STARTED.value}


def test_a_wave_waits_while_another_live_run_holds_the_budget(world) -> None:
    fleet = world[0]
    world[2].create_run("other", "test", "n9", "web", "B", {})  # a live run on another controller
    with fleet.db.write() as repo:
        repo.hold_rotation("n9", ["rack1"], "other", time.time())
        repo.put_leases(["n9"], "other", "holder", time.time(), time.time() + 60)
    ex, fake = _executor(world, "B", "A", budget=1, canary=0)
    released: list[float] = []

    def free_later() -> None:
        time.sleep(1.5)
        with fleet.db.write() as repo:
            repo.release_rotation("n9")
        released.append(time.time())

    threading.Thread(target=free_later, daemon=True).start()
    out = ex.run()
    assert out.status == RunStatus.SUCCEEDED  # it waited for the other run's host, and did not fail
    first_drain = min(at for _, kind, at in fake.times if kind == "drain")
    assert released and first_drain >= released[0]  # no host of ours went out while n9 held the place


def test_resume_after_a_drain_does_not_drain_again(world) -> None:
    ex, _ = _executor(world, "B", "A", run_id="r1")
    journal = world[2]
    journal.record("r1", "n0", 0, 1, Step.DRAIN, Phase.INTENT, "/d.yml")
    journal.record("r1", "n0", 0, 1, Step.DRAIN, Phase.DONE)
    tasks, finished = resume_state(journal.steps("r1"), "B", ex.plan.moves)
    assert tasks["n0"].next_step == Step.DESIRED and tasks["n0"].drained_at is not None
    out = ex.run(resume=tasks, finished=finished)
    assert out.status == RunStatus.SUCCEEDED
    assert _per_host(world[4], "n0") == ["bootdev-pxe", "on", "verify:B", "undrain:B"]


def _s(step: Step, phase: Phase, attempt: int = 1, detail: str = "B") -> StepRow:
    return StepRow(0, "r", "h", 0, attempt, step.value, phase.value, 1.0, detail)


RESUME: list[tuple[str, list[StepRow], Step, bool, int]] = [
    # (case, journal rows of one host, next step, still drained, attempt)
    ("killed-mid-drain", [_s(Step.DRAIN, Phase.INTENT)], Step.DRAIN, False, 1),
    ("killed-after-drain", [_s(Step.DRAIN, Phase.INTENT), _s(Step.DRAIN, Phase.DONE)], Step.DESIRED, True, 1),
    ("drain-failed", [_s(Step.DRAIN, Phase.INTENT), _s(Step.DRAIN, Phase.FAILED)], Step.DRAIN, False, 1),
    ("killed-after-report", [_s(Step.DRAIN, Phase.DONE), _s(Step.POWER, Phase.INTENT), _s(Step.REPORT, Phase.DONE)],
     Step.CHECKS, True, 1),
    ("killed-mid-verify", [_s(Step.DRAIN, Phase.DONE), _s(Step.CHECKS, Phase.DONE), _s(Step.VERIFY, Phase.INTENT)],
     Step.VERIFY, True, 1),
    ("killed-before-undrain", [_s(Step.DRAIN, Phase.DONE), _s(Step.VERIFY, Phase.DONE)], Step.UNDRAIN, True, 1),
    ("undrain-failed", [_s(Step.DRAIN, Phase.DONE), _s(Step.UNDRAIN, Phase.FAILED)], Step.UNDRAIN, True, 1),
    ("verify-failed-next-attempt", [_s(Step.DRAIN, Phase.DONE), _s(Step.VERIFY, Phase.FAILED)], Step.DRAIN, True, 2),
    ("killed-mid-undrain", [_s(Step.DRAIN, Phase.DONE), _s(Step.UNDRAIN, Phase.INTENT)], Step.UNDRAIN, True, 1),
]


@pytest.mark.parametrize(("case", "rows", "step", "drained", "attempt"), RESUME, ids=[c[0] for c in RESUME])
def test_resume_state_of_hook_steps(case, rows, step, drained, attempt) -> None:
    tasks, finished = resume_state(rows, "B", {"h": ("A", "B")})
    assert finished == {}
    t = tasks["h"]
    assert (t.next_step, t.drained_at is not None, t.attempt) == (step, drained, attempt)


def test_resume_after_the_undrain_runs_nothing_again() -> None:
    rows = [_s(Step.DRAIN, Phase.DONE), _s(Step.VERIFY, Phase.DONE), _s(Step.UNDRAIN, Phase.DONE)]
    assert resume_state(rows, "B", {"h": ("A", "B")}) == ({}, {"h": "done"})


def test_resume_settles_the_budget_of_a_host_finished_before_the_kill(world) -> None:
    """Killed between a host's end and its budget update: the resumed run releases the host's place."""
    ex, _ = _executor(world, "B", "A", budget=1, run_id="r2", canary=0)
    journal = world[2]
    with world[0].db.write() as repo:
        repo.hold_rotation("n0", ["rack1"], "r2", time.time())
    for step in (Step.DRAIN, Step.VERIFY, Step.UNDRAIN):
        journal.record("r2", "n0", 0, 1, step, Phase.DONE)
    journal.record("r2", "n0", 0, 1, Step.HOST, Phase.DONE, '{"result": "done", "error": "", "build": "B"}')
    tasks, finished = resume_state(journal.steps("r2"), "B", ex.plan.moves)
    out = ex.run(resume=tasks, finished=finished)
    assert out.status == RunStatus.SUCCEEDED and _rows(world) == []
    assert _per_host(world[4], "n0") == []


def test_validate_counts_good_hooks(tmp_path: Path, capsys) -> None:
    from toolkit.cli import main

    (tmp_path / "images").mkdir()
    (tmp_path / "roles").mkdir()
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "d.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "golden.yaml").write_text("rollout:\n  hooks:\n    - hosts: web\n      drain: playbooks/d.yml\n"
                                          "      undrain: playbooks/d.yml\n")
    assert main(["--project", str(tmp_path), "validate"]) == 0
    assert "1 rollout hook(s) valid" in capsys.readouterr().out


def test_the_fleet_page_shows_a_drained_host_and_why() -> None:
    from toolkit.fleet.page import COLOURS, FleetPage, render_page
    from toolkit.fleet.status import HostStatus

    host = HostStatus(name="web1", rack="rack1", mac="52:54:00:00:00:01", image="web@prod", desired="b2",
                      desired_source="channel", served="b2", observed="b2", observed_since=1.0, booted_at=None,
                      last_report=1.0, drift=(), state="drained",
                      rotation="left out of rotation: verify failed: task 'Check' failed: 500")
    page = render_page(FleetPage(2.0, [host], {}, [], []))
    assert 'data-state="drained"' in page and COLOURS["drained"] in page
    assert "left out of rotation: verify failed: task &#x27;Check&#x27; failed: 500" in page  # the cell's title
    assert '"rotation": "left out of rotation: verify failed' in page  # and the details the click shows
