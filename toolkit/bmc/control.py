"""Power and boot-device operations fanned out over a set of BMC endpoints (what the CLI verbs call)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from toolkit.bmc.base import BmcClient, BmcCommandError, BootDevice, PowerAction
from toolkit.bmc.endpoint import BmcEndpoint
from toolkit.bmc.pool import BmcPool, Outcome

POWER_SETTLE_SECONDS = 60.0
POLL_INTERVAL = 0.5


@dataclass(frozen=True)
class BmcResult:
    """One host's result of a fan-out BMC command."""
    host: str
    ok: bool
    power: str | None = None
    bootdev: str | None = None
    error: str | None = None
    message: str | None = None
    attempts: int = 1
    seconds: float = 0.0


@dataclass(frozen=True)
class FanoutReport:
    """A fan-out BMC command's results for every host, and how long it took."""
    action: str
    results: tuple[BmcResult, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every host succeeded."""
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> list[BmcResult]:
        """The hosts that failed."""
        return [r for r in self.results if not r.ok]


def _expected_state(action: PowerAction) -> str | None:
    return {PowerAction.ON: "on", PowerAction.OFF: "off", PowerAction.CYCLE: "on"}.get(action)


def _power_op(action: PowerAction, settle: float, sleep: Callable[[float], None]) -> Callable[[BmcClient], str]:
    def op(client: BmcClient) -> str:
        if action == PowerAction.STATUS:
            return client.get_power()  # reading never changes anything
        expected = _expected_state(action)
        if expected is not None and action != PowerAction.CYCLE and client.get_power() == expected:
            return expected  # already there: do not poke the BMC
        client.set_power(action)
        if expected is None:
            return client.get_power()
        deadline = time.monotonic() + settle
        while True:
            state = client.get_power()
            if state == expected:
                return state
            if time.monotonic() > deadline:
                raise BmcCommandError(client.host, f"{client.host}: power {action.value} accepted but the machine "
                                                   f"is still {state} after {settle:g} s; check the BMC's event log")
            sleep(POLL_INTERVAL)

    return op


def _report(action: str, outcomes: list[Outcome[str]], started: float, field: str) -> FanoutReport:
    results = tuple(
        BmcResult(host=o.host, ok=o.ok, error=o.error, message=o.message, attempts=o.attempts,
                   seconds=round(o.seconds, 3), **{field: o.value})
        for o in outcomes
    )
    return FanoutReport(action=action, results=results, seconds=round(time.monotonic() - started, 3))


def power_hosts(hosts: Sequence[BmcEndpoint], action: PowerAction, *, pool: BmcPool | None = None,
                settle: float = POWER_SETTLE_SECONDS, sleep: Callable[[float], None] = time.sleep) -> FanoutReport:
    """Send ``action`` to every host's BMC through the pool, then read back each power state."""
    started = time.monotonic()
    own = pool is None
    pool = pool or BmcPool()
    try:
        outcomes = pool.map(hosts, _power_op(action, settle, sleep))
    finally:
        if own:
            pool.close()
    return _report(f"power {action.value}", outcomes, started, "power")


def bootdev_hosts(hosts: Sequence[BmcEndpoint], device: BootDevice, *, persistent: bool = False,
                  pool: BmcPool | None = None, uefi: Mapping[str, bool] | None = None) -> FanoutReport:
    """``uefi`` maps a host name to whether its one-time boot override is a UEFI one."""
    started = time.monotonic()
    uefi = uefi or {}

    def op(client: BmcClient) -> str:
        client.set_bootdev(device, persistent=persistent, uefi=uefi.get(client.host, False))
        return device.value

    own = pool is None
    pool = pool or BmcPool()
    try:
        outcomes = pool.map(hosts, op)
    finally:
        if own:
            pool.close()
    return _report(f"bootdev {device.value}", outcomes, started, "bootdev")
