"""IPMI 2.0 (RMCP+) through pyghmi.

pyghmi's Command logs in when constructed, keeps the session alive in its own IO thread, and
reports failures as IpmiException text (sometimes with a completion code, sometimes only as
``{'error': ...}`` return values). classify_ipmi_error() is the single table turning those into
our typed errors.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from toolkit.bmc import pyghmi_fixes
from toolkit.bmc.base import (
    PYGHMI_BOOTDEV,
    BmcAuthError,
    BmcCommandError,
    BmcError,
    BmcUnreachableError,
    BmcUnsupportedError,
    BootDevice,
    BootSetting,
    PowerAction,
    PyghmiClient,
)
from toolkit.bmc.endpoint import BmcEndpoint

_AUTH_TEXT = ("incorrect password", "unauthorized name", "invalid rakp4", "wrong kg",
              "unauthorized role", "insufficient privilege", "invalid user name", "invalid role")
_UNREACHABLE_TEXT = ("timeout", "no response", "session no longer connected", "session disconnected",
                     "session failed to initialize", "no route", "unreachable", "connection refused")
# completion codes that mean "this BMC does not do that"
_UNSUPPORTED_CODES = {0xC1, 0xC2, 0xD5, 0xD6, 0x80}
_UNSUPPORTED_TEXT = ("invalid command", "not supported", "parameter not supported", "unrecognized")


def classify_ipmi_error(bmc: BmcEndpoint, what: str, exc: BaseException) -> BmcError:
    """Map a pyghmi/socket failure to a typed error whose message names the host. Pure."""
    address = bmc.address or "?"
    port = bmc.port if bmc else 0
    text = str(exc).strip()
    if text in ("", "None"):
        # pyghmi marks a session broken without a message when the BMC stopped answering
        text = "no response"
    # a password never reaches pyghmi's messages, but be certain before it reaches ours
    if bmc and bmc.password.reveal():
        text = text.replace(bmc.password.reveal(), "***")
    low = text.lower()
    code = getattr(exc, "ipmicode", 0) or 0
    if isinstance(exc, socket.gaierror):
        return BmcUnreachableError.for_host(bmc.name, address, port, f"cannot resolve: {text}")
    if isinstance(exc, OSError):
        return BmcUnreachableError.for_host(bmc.name, address, port, text)
    if any(t in low for t in _AUTH_TEXT):
        return BmcAuthError.for_host(bmc.name, address, text)
    if code == 0xFFFF or any(t in low for t in _UNREACHABLE_TEXT):
        return BmcUnreachableError.for_host(bmc.name, address, port, text)
    if code in _UNSUPPORTED_CODES or any(t in low for t in _UNSUPPORTED_TEXT):
        return BmcUnsupportedError.for_host(bmc.name, address, what, text)
    return BmcCommandError.for_host(bmc.name, address, what, text)


class IpmiClient(PyghmiClient):
    """One pyghmi session to one BMC, opened on first use and reused."""

    def __init__(self, endpoint: BmcEndpoint, *, timeout: float = 10.0) -> None:
        super().__init__(endpoint)
        self._timeout = timeout

    def _connect(self) -> Any:
        from pyghmi.ipmi import command as ipmi_command

        pyghmi_fixes.apply()
        bmc = self.endpoint
        pyghmi_fixes.forget_login(bmc.address, bmc.user, bmc.password.reveal(), bmc.port)
        return ipmi_command.Command(bmc=bmc.address, userid=bmc.user, password=bmc.password.reveal(),
                                    port=bmc.port, keepalive=True)

    def _classify(self, what: str, exc: BaseException) -> BmcError:
        return classify_ipmi_error(self.endpoint, what, exc)

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        self._command()  # a failed login is the caller's to retry (the pool backs off first)
        try:
            return super()._call(what, fn)
        except BmcUnreachableError:
            # The command lost its session: pyghmi (as patched) does not log in again inside the
            # command's wait, so the new login happens here, outside it, and the command runs once more.
            return super()._call(what, fn)

    def _result_error(self, result: dict[str, Any]) -> BaseException:
        from pyghmi.exceptions import IpmiException

        return IpmiException(result["error"], result.get("code", 0))

    def get_power(self) -> str:
        """The power state: "on" or "off"."""
        result = self._call("power status", lambda c: c.get_power())
        return str(result["powerstate"])

    def set_power(self, action: PowerAction) -> None:
        """Send a chassis power command (a cycle of a machine that is off powers it on)."""
        what = f"power {action.value}"
        if action == PowerAction.CYCLE:
            # A chassis power cycle is only defined for a machine that is on; for one that is
            # off, "cycle" means bring it up.
            if self.get_power() == "off":
                self._call(what, lambda c: c.set_power("on", wait=False))
            else:
                self._call(what, lambda c: c.raw_command(netfn=0, command=2, data=[2]))
            return
        state = {PowerAction.ON: "on", PowerAction.OFF: "off", PowerAction.RESET: "reset"}[action]
        # never wait=True: pyghmi's internal wait stalls with many threads; the pool polls instead
        self._call(what, lambda c: c.set_power(state, wait=False))

    def get_bootdev(self) -> BootSetting:
        """The boot override as the BMC reports it."""
        return BootSetting.from_pyghmi(self._call("boot device read", lambda c: c.get_bootdev()))

    def set_bootdev(self, device: BootDevice, *, persistent: bool = False, uefi: bool = False) -> None:
        """Set the boot device override."""
        self._call(f"boot device {device.value}",
                   lambda c: c.set_bootdev(PYGHMI_BOOTDEV[device], persist=persistent, uefiboot=uefi))

    def get_health(self) -> dict[str, str]:
        """The BMC's overall health reading."""
        result = self._call("health read", lambda c: c.get_health())
        health = result.get("health")
        return {"health": getattr(health, "name", str(health))}

    def _drop(self) -> None:
        cmd, self._cmd = self._cmd, None
        if cmd is not None:
            try:
                cmd.ipmi_session.logout()
            except Exception:  # noqa: S110 - a dead session cannot be logged out; nothing to do
                pass
