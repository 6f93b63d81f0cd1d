"""Serial-over-LAN: one host's serial console through its BMC, with pyghmi's console support.

pyghmi's ``Console`` logs in, activates the SOL payload and hands every chunk the BMC sends (or a
``{'error': ...}`` / ``{'info': ...}`` dict) to a callback, inside whichever thread drives
pyghmi's event loop. SolStream gives that a plain shape: ``read(timeout)`` returns bytes (empty
when nothing came) and raises a typed BmcError when the session broke; ``write`` types; ``close``
deactivates the payload so the BMC's one SOL instance is free again. Only IPMI has SOL; a Redfish
endpoint is BmcUnsupportedError.

EscapeFilter is the pure part of an interactive session: ``~.`` at the start of a line leaves,
``~~`` sends one ``~``, as ipmitool and ssh do.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from toolkit.bmc import pyghmi_fixes
from toolkit.bmc.base import BmcError, BmcUnreachableError, BmcUnsupportedError
from toolkit.bmc.endpoint import BmcEndpoint, BmcProtocol
from toolkit.bmc.ipmi import classify_ipmi_error

CONNECT_TIMEOUT_S = 20.0
PUMP_S = 0.2
_NEWLINES = (b"\r", b"\n")


@dataclass
class EscapeFilter:
    """Typed bytes in, bytes to send out and whether the user asked to leave (``~.``)."""
    char: bytes = b"~"
    at_line_start: bool = True
    pending: bool = False  # an escape character at a line start, waiting for the next byte

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """The bytes to send for ``data``, and True once the escape sequence to leave was typed."""
        out = bytearray()
        for i in range(len(data)):
            byte = data[i:i + 1]
            if self.pending:
                self.pending = False
                if byte == b".":
                    return bytes(out), True
                out += self.char if byte == self.char else self.char + byte
            elif byte == self.char and self.at_line_start and self.char:
                self.pending = True
                continue
            else:
                out += byte
            self.at_line_start = byte in _NEWLINES
        return bytes(out), False


class SolStream:
    """One SOL session to one BMC (see the module docstring). ``force`` takes over a session held by
    another client, as ``ipmitool sol deactivate`` then ``activate`` would."""

    def __init__(self, endpoint: BmcEndpoint, *, force: bool = False) -> None:
        if endpoint.protocol != BmcProtocol.IPMI:
            raise BmcUnsupportedError.for_host(endpoint.name, endpoint.address, "Serial-over-LAN",
                                               f"bmc_protocol {endpoint.protocol.value}; golden's SOL is IPMI's")
        self.endpoint = endpoint
        self.force = force
        self.events: queue.Queue[Any] = queue.Queue()
        self.console: Any = None
        self.running = False
        self.pump: threading.Thread | None = None

    def _on_data(self, data: Any) -> None:
        self.events.put(data)

    def open(self, timeout: float = CONNECT_TIMEOUT_S) -> SolStream:
        """Log in and activate SOL; a typed BmcError when the BMC refuses or does not answer."""
        from pyghmi.ipmi import console as pyghmi_console

        pyghmi_fixes.apply()
        bmc = self.endpoint
        pyghmi_fixes.forget_login(bmc.address, bmc.user, bmc.password.reveal(), bmc.port)
        try:
            self.console = pyghmi_console.Console(bmc.address, bmc.user, bmc.password.reveal(), self._on_data,
                                                  port=bmc.port, force=self.force)
        except Exception as exc:
            raise classify_ipmi_error(bmc, "Serial-over-LAN", exc) from None
        self.running = True
        self.pump = threading.Thread(target=self._drive, daemon=True, name=f"sol-{bmc.name}")
        self.pump.start()
        self._wait_connected(timeout)
        return self

    def _drive(self) -> None:
        from pyghmi.ipmi.private import session

        while self.running:
            try:
                session.Session.wait_for_rsp(PUMP_S)
            except Exception as exc:  # the loop must go on for the other sessions; this one learns of it
                self.events.put({"error": str(exc) or "no response"})
                time.sleep(PUMP_S)

    def _wait_connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.console.connected:
            if self.console.broken:
                self._raise_pending()
            if time.monotonic() > deadline:
                self.close()
                raise classify_ipmi_error(self.endpoint, "Serial-over-LAN", TimeoutError("timeout"))
            time.sleep(0.05)

    def _raise_pending(self) -> None:
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                raise self._error("session disconnected") from None
            if isinstance(event, dict) and "error" in event:
                raise self._error(str(event["error"]))

    def _error(self, text: str) -> BmcError:
        self.close()
        return classify_sol_error(self.endpoint, text)

    def read(self, timeout: float) -> bytes:
        """What the console printed within ``timeout`` (b"" if nothing); BmcError once the session broke."""
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return b""
        chunks = [event]
        with contextlib.suppress(queue.Empty):
            while len(chunks) < 256:
                chunks.append(self.events.get_nowait())
        out = bytearray()
        for ev in chunks:
            if isinstance(ev, dict):
                if "error" in ev:
                    raise self._error(str(ev["error"]))
                continue  # {'info': 'Remote system is powered down'}: the console goes on
            out += ev if isinstance(ev, bytes | bytearray) else str(ev).encode()
        return bytes(out)

    def write(self, data: bytes) -> None:
        """Type ``data`` on the console."""
        if data and self.console is not None:
            self.console.send_data(data)

    def close(self) -> None:
        """Deactivate SOL and log out (never raises: the session may be gone already)."""
        self.running = False
        console, self.console = self.console, None
        if console is not None:
            with contextlib.suppress(Exception):
                console.close()
            with contextlib.suppress(Exception):
                if console.ipmi_session is not None:
                    console.ipmi_session.logout()


_TAKEN = ("active for another client", "maximum sol session")
_DISABLED = ("sol is disabled",)
_ENDED = ("connection lost", "console disconnected", "sol deactivated")


def classify_sol_error(bmc: BmcEndpoint, text: str) -> BmcError:
    """A console's error text as a typed error: held by someone else, disabled, or the usual IPMI ones. Pure."""
    low = text.lower()
    if any(t in low for t in _TAKEN):
        return BmcError(bmc.name, f"{bmc.name}: the BMC's Serial-over-LAN session is in use by another client",
                        hint="wait for it to end, or take it over with --force")
    if any(t in low for t in _ENDED):
        return BmcUnreachableError(bmc.name, f"{bmc.name}: the Serial-over-LAN session ended ({text})",
                                   hint="the BMC or its network dropped it; open the console again")
    if any(t in low for t in _DISABLED):
        return BmcUnsupportedError.for_host(bmc.name, bmc.address, "Serial-over-LAN", text)
    return classify_ipmi_error(bmc, "Serial-over-LAN", RuntimeError(text))
