"""Lost RAKP and privilege-level replies against pyghmi as we patch it (toolkit.bmc.pyghmi_fixes, 5).

A real IPMI BMC (the lab's pyghmi server, one BMC, its own process) sits behind a UDP relay in the
test that drops the replies it is told to: the Nth RAKP 2 or RAKP 4, the privilege-level answer that
ends a login, or every answer to a command. Each case checks that every wait pyghmi made ended by
its own deadline, that no login started inside a command's wait, and what the client saw.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from toolkit.bmc import pyghmi_fixes
from toolkit.bmc.base import BmcUnreachableError
from toolkit.bmc.endpoint import BmcEndpoint
from toolkit.bmc.ipmi import IpmiClient
from toolkit.core.secret import Secret

# pyghmi unpatched never ends a login whose RAKP 2 keeps getting lost: that must fail, not hang
pytestmark = pytest.mark.timeout(60)

RAKP2, RAKP4, IPMI = 0x13, 0x15, 0x00  # RMCP+ payload types (IPMI 2.0 table 13-16)
WAKE_LATE_S = 0.25  # a wait may end this much after its deadline (thread scheduling on a busy machine)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kind(packet: bytes) -> int | None:
    """The RMCP+ payload type of a reply, None for an IPMI 1.5 (sessionless) one."""
    if len(packet) > 5 and packet[4] == 6:
        return packet[5] & 0x3F
    return None


@dataclass
class Relay:
    """UDP between the client and the BMC; ``drop(kind, n)`` decides the fate of the n-th reply of a kind."""
    bmc_port: int
    drop: Callable[[int | None, int], bool] = lambda kind, n: False
    seen: dict[int | None, int] = field(default_factory=dict)
    dropped: list[tuple[int | None, int]] = field(default_factory=list)

    def start(self) -> int:
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind(("::", 0))
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.upstream.bind(("127.0.0.1", 0))
        self.client: Any = None
        self.running = True
        threading.Thread(target=self._pump, args=(self.sock, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.upstream, False), daemon=True).start()
        return int(self.sock.getsockname()[1])

    def _pump(self, sock: socket.socket, from_client: bool) -> None:
        sock.settimeout(0.2)
        while self.running:
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if from_client:
                self.client = addr
                self.upstream.sendto(data, ("127.0.0.1", self.bmc_port))
                continue
            kind = _kind(data)
            n = self.seen[kind] = self.seen.get(kind, 0) + 1
            if self.drop(kind, n):
                self.dropped.append((kind, n))
            elif self.client is not None:
                self.sock.sendto(data, self.client)

    def stop(self) -> None:
        self.running = False
        self.sock.close()
        self.upstream.close()


@pytest.fixture(scope="module")
def bmc_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One simulated BMC (the lab's server, no dropped replies of its own) in its own process."""
    tmp = tmp_path_factory.mktemp("vbmc")
    port = _free_udp_port()
    cfg = {"bmcs": [{"name": "n1", "port": port, "user": "admin", "password": "pw-loss", "mac": "52:54:00:00:00:01"}],
           "sim": {}}
    (tmp / "cfg.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.lab.vbmc", str(tmp / "cfg.json")],
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for_bmc(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for_bmc(port: int) -> None:
    # an IPMI 1.5 Get Channel Authentication Capabilities, answered once the server listens
    ping = bytes.fromhex("0600ff07000000000000000000092018c88100388e04b5")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        for _ in range(100):
            s.sendto(ping, ("127.0.0.1", port))
            try:
                s.recvfrom(512)
                return
            except TimeoutError:
                continue
    raise AssertionError("the simulated BMC did not start")


@dataclass
class Watch:
    """Every pyghmi wait (its deadline, when it ended) and every re-login (with the session's state)."""
    waits: list[tuple[float, float]] = field(default_factory=list)
    relogs: list[tuple[str | None, bool]] = field(default_factory=list)

    def late_waits(self) -> list[float]:
        return [round(ended - deadline, 3) for deadline, ended in self.waits if ended > deadline + WAKE_LATE_S]


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Watch:
    pyghmi_fixes.apply()
    from pyghmi.ipmi.private import session

    w = Watch()
    io_wait, relog = session._io_wait, session.Session._relog

    def timed_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
        deadline = time.monotonic() + timeout
        io_wait(timeout, myaddr, evq)
        w.waits.append((deadline, time.monotonic()))

    def watched_relog(self: Any) -> Any:
        w.relogs.append((self.sessioncontext, bool(self._isincommand())))
        return relog(self)

    monkeypatch.setattr(session, "_io_wait", timed_wait)
    monkeypatch.setattr(session.Session, "_relog", watched_relog)
    return w


def _client(port: int) -> IpmiClient:
    return IpmiClient(BmcEndpoint(name="n1", address="127.0.0.1", port=port, user="admin",
                                  password=Secret("pw-loss")))


def _run(bmc_port: int, drop: Callable[[int | None, int], bool], op: Callable[[IpmiClient], Any]
         ) -> tuple[Any, float, Relay]:
    relay = Relay(bmc_port, drop)
    port = relay.start()
    client = _client(port)
    t0 = time.monotonic()
    try:
        result: Any = op(client)
    except BmcUnreachableError as exc:
        result = exc
    finally:
        elapsed = time.monotonic() - t0
        client.close()
        relay.stop()
    return result, elapsed, relay


def test_a_lost_rakp4_restarts_the_login_within_its_deadline(bmc_port: int, watch: Watch) -> None:
    result, elapsed, relay = _run(bmc_port, lambda kind, n: kind == RAKP4 and n == 1, lambda c: c.get_power())
    assert result == "off"
    assert relay.dropped == [(RAKP4, 1)]
    assert [ctx for ctx, _ in watch.relogs] == ["EXPECTINGRAKP4"]
    assert elapsed < pyghmi_fixes.LOGIN_TIMEOUT_S
    assert watch.late_waits() == []


def test_rakp2_never_answered_fails_the_login_by_its_deadline(bmc_port: int, watch: Watch,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyghmi_fixes, "LOGIN_TIMEOUT_S", 4.0)
    result, elapsed, relay = _run(bmc_port, lambda kind, n: kind == RAKP2, lambda c: c.get_power())
    assert isinstance(result, BmcUnreachableError)
    assert len(relay.dropped) >= 2  # it did start over at least once before giving up
    # the deadline, plus at most one retry interval of pyghmi's (it looks at the time when one ends)
    assert 4.0 <= elapsed < 4.0 + 3.0
    assert watch.late_waits() == []


def test_a_lost_privilege_level_answer_is_retried_in_the_login_not_a_new_one(bmc_port: int, watch: Watch) -> None:
    # the first session (encrypted) IPMI reply of a login is the answer to Set Session Privilege Level
    result, elapsed, relay = _run(bmc_port, lambda kind, n: kind == IPMI and n in (1, 2), lambda c: c.get_power())
    assert result == "off"
    assert relay.dropped == [(IPMI, 1), (IPMI, 2)]
    assert watch.relogs == []
    assert elapsed < pyghmi_fixes.LOGIN_TIMEOUT_S
    assert watch.late_waits() == []


def test_a_command_that_loses_its_session_logs_in_anew_outside_it_and_retries_once(
        bmc_port: int, watch: Watch) -> None:
    # reply 1 ends the login; replies 2-5 (the command and pyghmi's three resends) are all lost
    result, elapsed, relay = _run(bmc_port, lambda kind, n: kind == IPMI and 2 <= n <= 5, lambda c: c.get_power())
    assert result == "off"
    assert relay.dropped == [(IPMI, n) for n in range(2, 6)]
    assert relay.seen[RAKP4] == 2  # a second login, and it went through
    # pyghmi unpatched would log in again from inside the command's wait, the command still pending
    assert all(ctx != "ESTABLISHED" and not in_command for ctx, in_command in watch.relogs)
    assert elapsed < 15.0  # the command's four tries (~9 s), one new login, one command
    assert watch.late_waits() == []
