import pytest

from toolkit.core.errors import InputError
from toolkit.install.slots import Slot
from toolkit.rollout.plan import Amount, Candidate, Policy, plan_reimage


def hosts(n_racks: int, per: int, build: str | None = "A") -> list[Candidate]:
    return [Candidate(f"r{r}n{i:02d}", f"rack{r}", build) for r in range(n_racks) for i in range(per)]


def test_canary_first_then_waves_cover_every_host_once():
    plan = plan_reimage("web", "B", hosts(3, 10), Policy(canary=1, wave_size=Amount(5)))
    assert plan.waves[0].canary and len(plan.waves[0].hosts) == 1
    assert all(len(w.hosts) <= 5 for w in plan.waves[1:])
    assert sorted(plan.hosts) == sorted(c.name for c in hosts(3, 10))
    assert len(set(plan.hosts)) == 30


def test_waves_interleave_racks_and_respect_per_rack():
    plan = plan_reimage("web", "B", hosts(2, 6), Policy(canary=0, wave_size=Amount(4), per_rack=1))
    for w in plan.waves:
        racks = [h[:2] for h in w.hosts]
        assert len(racks) == len(set(racks)), w
    assert len(plan.waves) == 6


def test_percent_wave_size_and_failure_budget():
    plan = plan_reimage("web", "B", hosts(1, 40), Policy(canary=2, wave_size=Amount(25, True),
                                                         max_failures=Amount(10, True)))
    assert [len(w.hosts) for w in plan.waves] == [2, 10, 10, 10, 8]
    assert plan.failure_budget == 4


def test_max_unavailable_caps_wave_size():
    plan = plan_reimage("web", "B", hosts(1, 10), Policy(canary=0, wave_size=Amount(50, True),
                                                         max_unavailable=Amount(2)))
    assert max(len(w.hosts) for w in plan.waves) == 2
    assert plan.notes


def test_hosts_on_target_are_left_alone_unless_included():
    cands = hosts(1, 3) + [Candidate("done", "rack0", "B")]
    plan = plan_reimage("web", "B", cands, Policy())
    assert "done" not in plan.hosts and plan.unchanged == ("done",)
    plan = plan_reimage("web", "B", cands, Policy(include_current=True))
    assert "done" in plan.hosts


@pytest.mark.parametrize("text", ["x", "-1", "101%", "1.5"])
def test_bad_amounts_are_input_errors(text):
    with pytest.raises(InputError):
        Amount.parse(text, "--wave-size")


def test_empty_selection_is_an_input_error():
    with pytest.raises(InputError, match="matched no hosts"):
        plan_reimage("web", "B", [], Policy())


# (id, candidates, slots the plan writes) -- disk hosts only; a host already on the target writes nothing
SLOT_CASES = [
    ("ram-hosts-have-no-slot", [Candidate("r1", "rack1", "old")], {}),
    ("unknown-slots-write-a", [Candidate("d1", "rack1", None, disk=True)], {"d1": "a"}),
    ("running-a-writes-b", [Candidate("d1", "rack1", "old", disk=True, active_slot=Slot.A)], {"d1": "b"}),
    ("running-b-writes-a", [Candidate("d1", "rack1", "old", disk=True, active_slot=Slot.B)], {"d1": "a"}),
    ("on-target-writes-nothing", [Candidate("d1", "rack1", "new", disk=True, active_slot=Slot.A),
                                  Candidate("d2", "rack1", "old", disk=True)], {"d2": "a"}),
]


@pytest.mark.parametrize(("cands", "slots"), [c[1:] for c in SLOT_CASES], ids=[c[0] for c in SLOT_CASES])
def test_the_plan_names_the_slot_each_disk_host_writes(cands: list[Candidate], slots: dict[str, str]) -> None:
    assert plan_reimage("web", "new", cands, Policy()).slots == slots


def test_a_bios_disk_host_fails_the_plan_naming_it() -> None:
    cands = [Candidate("d1", "rack1", None, disk=True), Candidate("b0", "rack1", None, disk=True, uefi=False),
             Candidate("r1", "rack1", None, uefi=False)]
    with pytest.raises(InputError, match=r"^host b0: install: disk needs UEFI firmware"):
        plan_reimage("web", "new", cands, Policy())
    many = [Candidate(f"b{i:02}", "rack1", None, disk=True, uefi=False) for i in range(12)]
    with pytest.raises(InputError, match=r"^hosts b00, .*, b09 and 2 more: install: disk needs UEFI"):
        plan_reimage("web", "new", many, Policy())
