"""BMC fan-out logic with fake clients: retries only on connection failures, per-BMC limits, reuse."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from toolkit.bmc.base import (
    BmcAuthError,
    BmcClient,
    BmcUnreachableError,
    BootDevice,
    BootSetting,
    PowerAction,
)
from toolkit.bmc.control import bootdev_hosts, power_hosts
from toolkit.bmc.endpoint import BmcEndpoint
from toolkit.bmc.pool import BmcPool, RetryPolicy
from toolkit.core.secret import Secret
from toolkit.inventory.hosts import Host


def _host(name: str, port: int = 623) -> BmcEndpoint:
    return BmcEndpoint(name=name, address="127.0.0.1", port=port, user="u", password=Secret("pw"))


class FakeBmc:
    def __init__(self, host: str, script: list[Exception | None] | None = None) -> None:
        self.host = host
        self.power = "off"
        self.script = list(script or [])
        self.calls: list[str] = []
        self.boot: BootSetting | None = None
        self.closed = False

    def _step(self, what: str) -> None:
        self.calls.append(what)
        if self.script:
            err = self.script.pop(0)
            if err is not None:
                raise err

    def get_power(self) -> str:
        self._step("get_power")
        return self.power

    def set_power(self, action: PowerAction) -> None:
        self._step(f"set_power {action.value}")
        self.power = "off" if action == PowerAction.OFF else "on"

    def get_bootdev(self) -> BootSetting:
        return self.boot or BootSetting("default")

    def set_bootdev(self, device: BootDevice, *, persistent: bool = False, uefi: bool = False) -> None:
        self._step(f"set_bootdev {device.value}")
        self.boot = BootSetting(device.value, persistent, uefi)

    def get_health(self) -> dict[str, str]:
        return {"health": "ok"}

    def close(self) -> None:
        self.closed = True


def _unreachable(host: str) -> BmcUnreachableError:
    return BmcUnreachableError.for_host(host, "127.0.0.1", 623, "timeout")


def _pool(factory: Callable[[Host], BmcClient], **kw: Any) -> BmcPool:
    return BmcPool(client_factory=factory, retry=RetryPolicy(attempts=3, base_delay=0.01), seed=1,
                   sleep=lambda s: None, **kw)


def test_unreachable_is_retried_then_succeeds() -> None:
    created: list[FakeBmc] = []

    def factory(h: Host) -> BmcClient:
        created.append(FakeBmc(h.name, [_unreachable(h.name)] if not created else []))
        return created[-1]

    with _pool(factory) as pool:
        [outcome] = pool.map([_host("a")], lambda c: c.get_power())
    assert outcome.ok and outcome.value == "off" and outcome.attempts == 2
    assert len(created) == 2  # the broken session was not reused


def test_auth_error_is_not_retried() -> None:
    fakes: list[FakeBmc] = []

    def factory(h: Host) -> BmcClient:
        fakes.append(FakeBmc(h.name, [BmcAuthError.for_host(h.name, "127.0.0.1", "Incorrect password provided")] * 5))
        return fakes[-1]

    with _pool(factory) as pool:
        [outcome] = pool.map([_host("a")], lambda c: c.get_power())
    assert not outcome.ok and outcome.error == "BmcAuthError" and outcome.attempts == 1
    assert outcome.message is not None and outcome.message.startswith("a: ")


def test_retries_give_up_after_attempts() -> None:
    with _pool(lambda h: FakeBmc(h.name, [_unreachable(h.name)] * 10)) as pool:
        [outcome] = pool.map([_host("a")], lambda c: c.get_power())
    assert not outcome.ok and outcome.error == "BmcUnreachableError" and outcome.attempts == 3


def test_sessions_reused_across_operations() -> None:
    made: list[str] = []

    def factory(h: Host) -> BmcClient:
        made.append(h.name)
        return FakeBmc(h.name)

    with _pool(factory) as pool:
        pool.map([_host("a"), _host("b", 624)], lambda c: c.get_power())
        pool.map([_host("a"), _host("b", 624)], lambda c: c.get_power())
    assert sorted(made) == ["a", "b"]


def test_per_bmc_inflight_limit() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def op(c: BmcClient) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return "off"

    # eight inventory hosts behind ONE BMC address:port (a chassis manager)
    hosts = [_host(f"n{i}") for i in range(8)]
    with _pool(lambda h: FakeBmc(h.name), workers=8, per_bmc_inflight=1) as pool:
        outcomes = pool.map(hosts, op)
    assert all(o.ok for o in outcomes) and peak == 1
    assert [o.host for o in outcomes] == [h.name for h in hosts]


def test_rate_limit_spaces_commands() -> None:
    hosts = [_host(f"n{i}") for i in range(5)]
    pool = BmcPool(client_factory=lambda h: FakeBmc(h.name), workers=5, per_bmc_inflight=5, per_bmc_rate=50)
    started = time.monotonic()
    pool.map(hosts, lambda c: c.get_power())
    assert time.monotonic() - started >= 4 / 50 * 0.9


def test_power_on_skips_when_already_on_and_polls() -> None:
    fake = FakeBmc("a")
    fake.power = "on"
    report = power_hosts([_host("a")], PowerAction.ON, pool=_pool(lambda h: fake))
    assert report.ok and report.results[0].power == "on"
    assert fake.calls == ["get_power"]  # nothing changed on a machine that is already on
    fake2 = FakeBmc("b")
    report = power_hosts([_host("b")], PowerAction.ON, pool=_pool(lambda h: fake2), sleep=lambda s: None)
    assert report.ok and fake2.calls == ["get_power", "set_power on", "get_power"]


def test_status_never_writes() -> None:
    fake = FakeBmc("a")
    power_hosts([_host("a")], PowerAction.STATUS, pool=_pool(lambda h: fake))
    assert fake.calls == ["get_power"]


def test_bootdev_passes_uefi_from_inventory() -> None:
    fake = FakeBmc("a")
    report = bootdev_hosts([_host("a")], BootDevice.PXE, persistent=True, pool=_pool(lambda h: fake),
                           uefi={"a": True})
    assert report.ok and fake.boot == BootSetting("pxe", True, True)


def test_retry_delay_is_jittered_and_capped() -> None:
    import random

    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=4.0)
    rng = random.Random(3)
    delays = [policy.delay(n, rng) for n in (1, 2, 3, 4, 5)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0
    assert all(d <= 4.0 for d in delays)
    assert len({round(d, 6) for d in delays}) == 5


@pytest.mark.parametrize("n", [1, 3])
def test_process_fanout_keeps_order(n: int) -> None:
    hosts = [_host(f"n{i}", 700 + i) for i in range(7)]
    with BmcPool(client_factory=lambda h: FakeBmc(h.name), processes=n) as pool:
        outcomes = pool.map(hosts, lambda c: c.host.upper())
    assert [o.value for o in outcomes] == [h.name.upper() for h in hosts]


def test_process_fanout_steals_work_from_a_stuck_process() -> None:
    """One host that takes long (a BMC losing replies) holds its process, not the hosts after it:
    the other processes take them (with fixed shares, its whole share would wait behind it)."""
    hosts = [_host(f"n{i}", 800 + i) for i in range(12)]

    def op(c: FakeBmc) -> tuple[str, int]:
        if c.host == "n0":
            time.sleep(3.0)
        return c.host, os.getpid()

    with BmcPool(client_factory=lambda h: FakeBmc(h.name), processes=2) as pool:
        started = time.monotonic()
        outcomes = pool.map(hosts, op)
        took = time.monotonic() - started
    pids = {o.value[0]: o.value[1] for o in outcomes}
    assert [o.value[0] for o in outcomes] == [h.name for h in hosts]  # order kept
    # everything but n0 went to the other process while n0's was busy
    assert {pids[h.name] for h in hosts[1:]} == {pids["n1"]} and pids["n1"] != pids["n0"], pids
    assert took < 3.0 + 2.0, took


def test_process_fanout_keeps_one_bmc_in_one_process() -> None:
    """Hosts behind one BMC address:port (a chassis manager) stay in one process: per-BMC limits hold."""
    hosts = [_host(f"n{i}", 900 + (i % 3)) for i in range(9)]
    with BmcPool(client_factory=lambda h: FakeBmc(h.name), processes=3) as pool:
        outcomes = pool.map(hosts, lambda c: os.getpid())
    by_bmc: dict[int, set[int]] = {}
    for h, o in zip(hosts, outcomes, strict=True):
        by_bmc.setdefault(h.port, set()).add(o.value)
    assert all(len(p) == 1 for p in by_bmc.values()), by_bmc


def test_process_fanout_logs_out_of_each_bmc_once_its_hosts_are_done(tmp_path) -> None:
    """A worker's cached sessions die with it, so it closes each BMC's right after that BMC's
    hosts: idle sessions kept alive in a worker only compete with the BMCs still to do."""
    log = tmp_path / "events"

    class Logged(FakeBmc):
        def get_power(self) -> str:
            with open(log, "a") as f:
                f.write(f"{self.host} command\n")
            return "on"

        def close(self) -> None:
            with open(log, "a") as f:
                f.write(f"{self.host} closed\n")

    hosts = [_host(f"n{i}", 950 + i // 2) for i in range(6)]  # two hosts behind each of 3 BMCs
    with BmcPool(client_factory=lambda h: Logged(h.name), processes=1) as pool:
        pool.map(hosts, lambda c: c.get_power())
    # one process, one BMC after the other: both hosts of a BMC, then its (one, reused) client closed
    assert log.read_text().splitlines() == ["n0 command", "n0 command", "n0 closed", "n2 command", "n2 command",
                                            "n2 closed", "n4 command", "n4 command", "n4 closed"]
