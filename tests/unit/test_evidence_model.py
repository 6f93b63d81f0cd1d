"""The evidence model, one row per way a report can stand: verified only within a live, uncontested
attempt; unsolicited reports kept as unverified observations that no decision acts on; tokens of an
attempt that ended, was contested or superseded refused (403) with nothing recorded; a forged image
refused. Real HTTP on 127.0.0.1 against the boot server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tests.unit.test_bootserver import MAC1, Env, _cmdline, _report, env  # noqa: F401 - the fixture
from toolkit.rollout.plan import Candidate, Policy, plan_reimage

A1, A2 = "a1" * 8, "a2" * 8


def _fetch(e: Env) -> str:
    return _cmdline(e.request("GET", f"/boot/{MAC1}.ipxe")[2].decode())["golden.token"]


def _armed(e: Env, attempt: str = A1, expires_in: float = 600) -> str:
    e.fleet.arm_attempts([("node1", attempt, "b2")], expires_in)
    return _fetch(e)


def unsolicited(e: Env) -> str:
    return _fetch(e)  # no attempt armed: anyone on the boot network can do this


def finished(e: Env) -> str:
    token = _armed(e)
    e.fleet.disarm_attempts([("node1", A1)])  # the controller ended the attempt (done or failed)
    return token


def expired(e: Env) -> str:
    token = _armed(e, expires_in=0.2)
    time.sleep(0.3)
    return token


def contested(e: Env) -> str:
    token = _armed(e)
    _fetch(e)  # a second fetch within the attempt
    return token


def superseded(e: Env) -> str:
    token = _armed(e)
    e.fleet.arm_attempts([("node1", A2, "b2")], 600)  # the next attempt (a retry) replaced it
    return token


def live(e: Env) -> str:
    return _armed(e)


@dataclass(frozen=True)
class Case:
    what: str
    token: Callable[[Env], str]
    status: int
    kind: str | None  # the refusal's kind; None when accepted
    verified: bool = False
    image: str = "base"


CASES = [
    Case("unsolicited report", unsolicited, 200, None),
    Case("token of a finished or failed attempt", finished, 403, "ended"),
    Case("token of an expired attempt", expired, 403, "ended"),
    Case("token of a contested attempt", contested, 403, "contested"),
    Case("token of a superseded attempt", superseded, 403, "ended"),
    Case("forged image within a live attempt", live, 403, "forged", image="evil"),
    Case("report of a live attempt", live, 200, None, verified=True),
]


def _snapshot(e: Env) -> tuple[object, ...]:
    with e.db.read() as repo:
        host = repo.get_host("node1")
        return (host.observed_build if host else None, host.last_report_at if host else None,
                repo.get_unverified("node1"), len(repo.events_after(0, ["report"])), repo.get_taint("node1"))


def _reimage_moves(e: Env) -> bool:
    [status] = e.fleet.status("node1")
    plan = plan_reimage("base", "b2", [Candidate("node1", "rack1", status.observed, None)], Policy())
    return "node1" not in plan.unchanged


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_a_report_stands_as_its_attempt_allows(env: Env, case: Case) -> None:  # noqa: F811
    token = case.token(env)
    before = _snapshot(env)
    code, body = _report(env, token, image=case.image, drift=[])
    assert (code, body.get("kind")) == (case.status, case.kind), body
    [status] = env.fleet.status("node1")
    if case.status == 403:
        assert _snapshot(env) == before  # nothing recorded
    assert (status.observed == "b2") is case.verified
    assert _reimage_moves(env) is not case.verified  # only verified evidence makes a reimage skip the host
    with env.db.read() as repo:
        assert repo.count_soaked_hosts("b2", time.time() + 1) == int(case.verified)  # gates count only evidence
        unverified = repo.get_unverified("node1")
    assert (unverified is not None) is (case.status == 200 and not case.verified)
    if unverified is not None:
        assert (status.unverified, unverified.build_id, unverified.image) == ("b2", "b2", "base")


def test_an_unsolicited_report_never_clears_a_taint(env: Env) -> None:  # noqa: F811
    with env.db.write() as repo:
        repo.ensure_host("node1", MAC1)
        repo.taint_host("node1", time.time() - 60, "b2", "breakglass", "grant 7")
    booted = datetime.now(UTC).isoformat()  # a boot after the taint: only its standing decides
    assert _report(env, unsolicited(env), drift=[], booted_at=booted)[0] == 200
    assert env.fleet.status("node1")[0].taint == "grant 7"
    assert _report(env, finished(env), drift=[], booted_at=booted)[0] == 403
    assert env.fleet.status("node1")[0].taint == "grant 7"
    assert _report(env, _armed(env, A2), drift=[], booted_at=booted)[0] == 200  # a reimage's own boot does
    assert env.fleet.status("node1")[0].taint is None


def test_a_contest_after_the_report_takes_the_verified_build_back(env: Env) -> None:  # noqa: F811
    code, body = _report(env, _armed(env), drift=[])
    assert code == 200 and env.fleet.status("node1")[0].observed == "b2"
    _fetch(env)  # an impostor's (or the real machine's) fetch within the same attempt, after the report
    [status] = env.fleet.status("node1")
    assert status.observed is None and _reimage_moves(env)
    code, refused = _report(env, body["next_token"], drift=[])  # the re-report chain of that report ended too
    assert (code, refused["kind"]) == (403, "replay")
    with env.db.read() as repo:
        [contest] = repo.events_after(0, ["contested"])
    assert json.loads(contest.detail)["attempt"] == A1


def test_re_reports_keep_the_standing_of_the_report_they_follow(env: Env) -> None:  # noqa: F811
    code, body = _report(env, _armed(env), drift=[])
    env.fleet.disarm_attempts([("node1", A1)])  # the reimage finished
    code, _ = _report(env, body["next_token"], drift=["/etc/motd"])  # the agent's periodic re-report
    assert code == 200 and env.fleet.status("node1")[0].drift == ("/etc/motd",)
    code, body = _report(env, unsolicited(env), drift=[])
    assert code == 200
    code, _ = _report(env, body["next_token"], build="b1", drift=[])
    assert code == 403  # a next token is bound to the build it was handed out for
    assert _report(env, body["next_token"], drift=[])[0] == 200
    with env.db.read() as repo:
        assert repo.get_unverified("node1").count == 2
    assert env.fleet.status("node1")[0].drift == ("/etc/motd",)  # unverified reports never overwrite evidence
