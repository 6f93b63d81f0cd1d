"""The Secure Boot chain's logic: a secure_boot host gets the signed UKI (never kernel + initrd), a firmware
refusal is recorded only for a live attempt's token, and it fails the host at once and can never succeed it.
Real HTTP against the boot server on 127.0.0.1 (test_bootserver's env) and the executor over the state feed."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build
from tests.unit.test_bootserver import MAC1, SECRET, Env, _report, env  # noqa: F401 - the fixture
from tests.unit.test_rollout_execute import FakeClient, FakeMachine, run
from toolkit.bmc.pool import BmcPool, RetryPolicy
from toolkit.boot import pxe
from toolkit.core.errors import InputError
from toolkit.fleet.fleet import Fleet
from toolkit.inventory.hosts import load_inventory
from toolkit.rollout.journal import Journal, Phase, Step
from toolkit.state.boots import BOOT_REFUSED
from toolkit.state.db import StateDB
from toolkit.store import channels
from toolkit.store.artifacts import Store

UKI_SIZES = {"vmlinuz": 3000, "initrd": 2000, "rootfs.squashfs": 10_000, "uki.efi": 7000, "uki.crt": 900}
ERRNO = "0x7f0c8083"


def _secure(e: Env, build_id: str = "b3", uki: bool = True) -> None:
    """node1 becomes a secure_boot host on ``build_id`` (published to dev), with or without a signed UKI."""
    make_build(e.store, "base", build_id, age_rank=3, sizes=UKI_SIZES if uki else None)
    channels.publish(e.db, e.store, "base", build_id, "dev", user="test")
    text = e.inventory.read_text().replace('          image: "base@dev"\n',
                                           '          image: "base@dev"\n          secure_boot: true\n', 1)
    assert "secure_boot" in text
    st = e.inventory.stat()
    e.inventory.write_text(text)
    os.utime(e.inventory, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _script(e: Env, attempt: str | None = "a" * 16) -> str:
    if attempt:
        e.fleet.arm_attempts([("node1", attempt, "b3")], 600)
    code, _, body = e.request("GET", f"/boot/{MAC1}.ipxe", headers={"Host": "10.0.2.2:8080"})
    assert code == 200
    return body.decode()


def _refused_path(script: str, errno: str = ERRNO) -> str:
    [url] = re.findall(r"imgfetch --name refusal (\S+)", script)
    assert url.endswith("&errno=${errno}")
    return url.removeprefix("http://10.0.2.2:8080").replace("${errno}", errno)


def _refusals(e: Env) -> list:
    with e.db.read() as repo:
        return repo.events_after(0, [BOOT_REFUSED])


def test_secure_boot_host_gets_the_signed_uki_with_the_token_on_its_command_line(env: Env) -> None:  # noqa: F811
    _secure(env)
    script = _script(env)
    assert "\nkernel " not in script and "\ninitrd " not in script  # never the unsigned chain
    [fetch] = [ln for ln in script.splitlines() if ln.startswith("imgfetch --name uki.efi ")]
    words = fetch.split()
    assert words[3] == "http://10.0.2.2:8080/store/base/b3/uki.efi" and fetch.endswith(" || goto failed")
    args = dict(w.split("=", 1) for w in words[4:] if "=" in w)
    assert args["golden.build"] == "b3" and args["golden.token"].count(".") == 3
    assert "imgexec uki.efi || goto refused" in script
    assert f"token={args['golden.token']}" in _refused_path(script)


def test_secure_boot_host_and_a_build_without_a_uki_boots_nothing(env: Env) -> None:  # noqa: F811
    _secure(env, uki=False)
    script = _script(env, attempt=None)
    assert "\nkernel " not in script and "uki.efi" not in script
    assert "has no signed UKI" in script


def test_machine_script_refuses_a_build_without_a_uki(env: Env) -> None:  # noqa: F811
    with pytest.raises(InputError, match="no signed UKI"):
        pxe.machine_script(env.b2, MAC1, "n.1.-.s", "http://h", "http://h/report", secure_boot=True)


def test_a_refusal_of_a_live_attempt_is_recorded_and_spends_the_token(env: Env) -> None:  # noqa: F811
    _secure(env)
    script = _script(env)
    token = _cmdline_token(script)
    code, _, body = env.request("GET", _refused_path(script))
    assert code == 200 and b"recorded" in body
    [event] = _refusals(env)
    assert (event.host, event.build_id) == ("node1", "b3")
    assert json.loads(event.detail) == {"attempt": "a" * 16, "errno": ERRNO}
    with env.db.read() as repo:
        host = repo.get_host("node1")
    assert host is None or host.observed_build is None  # firmware evidence never sets what a host runs
    assert _report(env, token, build="b3")[0] == 403  # nothing booted: no agent may report with that token
    assert env.request("GET", _refused_path(script))[0] == 403  # nor refuse twice
    assert len(_refusals(env)) == 1


def _cmdline_token(script: str) -> str:
    return re.search(r"golden\.token=(\S+)", script).group(1)  # type: ignore[union-attr]


@pytest.mark.parametrize("tamper, why", [
    (lambda p: p.replace("mac=52%3A54%3A00%3A00%3A00%3A01", "mac=52%3A54%3A00%3A00%3A00%3A02"), "another MAC"),
    (lambda p: p.replace("build=b3", "build=b2"), "another build"),
    (lambda p: re.sub(r"token=[^&]+", "token=zz", p), "a malformed token"),
    (lambda p: p.replace("errno=" + ERRNO, "errno=%24%7Berrno%7D"), None),  # an odd errno is kept as '?'
])
def test_a_refusal_must_carry_the_attempts_own_signed_claims(env: Env, tamper, why) -> None:  # noqa: F811
    _secure(env)
    code = env.request("GET", tamper(_refused_path(_script(env))))[0]
    if why is None:
        assert code == 200 and json.loads(_refusals(env)[0].detail)["errno"] == "?"
    else:
        assert code == 403 and _refusals(env) == [], why


def test_a_refusal_outside_an_attempt_counts_for_nothing(env: Env) -> None:  # noqa: F811
    _secure(env)
    script = _script(env, attempt=None)  # anyone on the boot network can fetch this
    assert env.request("GET", _refused_path(script))[0] == 403
    assert _refusals(env) == []


def test_a_refusal_after_its_attempt_ended_counts_for_nothing(env: Env) -> None:  # noqa: F811
    _secure(env)
    script = _script(env)
    env.fleet.disarm_attempts([("node1", "a" * 16)])
    assert env.request("GET", _refused_path(script))[0] == 403
    assert _refusals(env) == []


class RefusingMachine(FakeMachine):
    """Its firmware refuses the image: a refusal for this attempt, then (an impostor's) report all the same."""

    def boot(self) -> None:
        armed = self.fleet.attempt_of(self.host.name)
        desired = self.fleet.desired_for(self.host)
        if armed is None or desired is None:  # a power action outside an attempt (the run's cleanup)
            return
        time.sleep(0.05)
        with self.fleet.db.write() as repo:
            repo.add_event(BOOT_REFUSED, time.time(), self.host.mac, self.host.name, desired.build_id,
                           json.dumps({"attempt": armed.attempt, "errno": ERRNO}))
        super().boot()


@pytest.fixture
def refusing_world(tmp_path: Path, state_db: StateDB):
    """test_rollout_execute's world, its machines' firmware refusing every image."""
    inv = tmp_path / "inventory.yml"
    hosts = {f"n{i}": {"mac": f"52:54:00:00:00:0{i}", "bmc_address": "127.0.0.1", "bmc_port": 7000 + i,
                       "bmc_user": "admin", "bmc_password": "pw", "image": "web@prod", "secure_boot": True}
             for i in range(2)}
    inv.write_text(json.dumps({"all": {"children": {"rack1": {"hosts": hosts}}}}))
    fleet = Fleet(state_db, Store(tmp_path / "store"), inv)
    inventory = load_inventory(inv)
    log: list[tuple[str, str]] = []
    machines = {h.name: RefusingMachine(fleet, h, {}, log) for h in inventory.hosts}
    pool = BmcPool(client_factory=lambda h: FakeClient(machines[h.name]), retry=RetryPolicy(attempts=1))
    return fleet, {h.name: h for h in inventory.hosts}, Journal(state_db), pool, log


def test_a_refusal_fails_the_host_at_once_and_no_report_rescues_it(refusing_world) -> None:
    journal = refusing_world[2]
    started = time.monotonic()
    _, run_id = run(refusing_world, "B", None, canary=1, budget=0, rollback=False)
    took = time.monotonic() - started
    assert took < 5  # the boot timeout is 5 s: the refusal, not the timeout, ended it
    steps = journal.steps(run_id)
    failed = [s for s in steps if s.step == Step.REPORT.value and s.phase == Phase.FAILED.value]
    assert failed and all(s.detail.startswith("boot refused: the firmware would not start the signed image of "
                                              "build B") for s in failed), failed
    assert ERRNO in failed[0].detail
    assert not [s for s in steps if s.step == Step.REPORT.value and s.phase == Phase.DONE.value]


def test_the_uki_and_its_certificate_are_served_from_the_store(env: Env) -> None:  # noqa: F811
    _secure(env)
    build = env.store.find("base", "b3")
    assert build is not None
    for name in ("uki.efi", "uki.crt"):
        code, _, body = env.request("GET", f"/store/base/b3/{name}")
        assert code == 200 and body == (build.path / name).read_bytes(), name
    assert env.request("GET", "/store/base/b2/uki.efi")[0] == 404  # a build without one
