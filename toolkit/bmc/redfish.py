"""Redfish through pyghmi's Redfish client, behind the same interface as IPMI.

pyghmi's Command connects (HTTPS, basic auth or a session token) when constructed and finds the
one system it manages. It reports failures as PyghmiException/RedfishError text ("Access Denied"
for a 401 while logging in) or socket/TLS errors; classify_redfish_error() is the single table
turning those into our typed errors. Tested against sushy-emulator's fake driver
(tests/integration/test_redfish_peer.py).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from typing import Any

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
from toolkit.bmc.endpoint import DEFAULT_REDFISH_PORT, BmcEndpoint
from toolkit.bmc.tls import ca_verifier

# Whole words only: pyghmi puts resource URLs (with UUIDs such as ...-4011-...) into its messages.
_AUTH_RE = re.compile(r"\b(401|403|unauthori[sz]ed|access denied|accessdenied|authentication|"
                      r"insufficientprivilege|novalidsession|incorrect username or password)\b")
_UNREACHABLE_RE = re.compile(r"(timed out|timeout|connection|unreachable|refused|no route|"
                             r"target unavailable|redfish not ready|\b50[234]\b)")
_UNSUPPORTED_RE = re.compile(r"(not supported|notsupported|unsupported|not implemented|not detected|"
                             r"actionnotsupported|\b40[45]\b|\b501\b)")
_UNSUPPORTED_TYPES = ("UnsupportedFunctionality", "InvalidParameterValue")

# Redfish ComputerSystem.PowerState (lower-cased by pyghmi) -> ours. A machine on its way up is not
# on yet, one on its way down is not off yet: pollers keep waiting either way.
_POWER = {"on": "on", "off": "off", "poweringon": "off", "poweringoff": "on", "paused": "on"}

# pyghmi.constants.Health bits
_HEALTH = ((4, "failed"), (2, "critical"), (1, "warning"))


def _text(exc: BaseException) -> str:
    # pyghmi re-raises a verifycallback's refusal with the original args as one tuple: (('reason',),)
    args = exc.args
    while len(args) == 1 and isinstance(args[0], tuple):
        args = args[0]
    return str(args[0]) if len(args) == 1 and isinstance(args[0], str) else str(exc)


def classify_redfish_error(bmc: BmcEndpoint, what: str, exc: BaseException) -> BmcError:
    """Map a pyghmi/socket/TLS failure to a typed error whose message names the host. Pure."""
    address = bmc.address or "?"
    port = bmc.port
    text = " ".join(_text(exc).split()) or type(exc).__name__  # one line
    if bmc.password.reveal():
        text = text.replace(bmc.password.reveal(), "***")
    low = text.lower()
    if isinstance(exc, ssl.SSLCertVerificationError):
        # retrying cannot help; this is neither "no answer" nor the BMC refusing a command
        return BmcCommandError(bmc.name, f"{bmc.name}: BMC {address}:{port} presented a TLS certificate "
                                          f"that is not trusted ({text})",
                               hint="install the BMC's CA certificate on this host, or do not verify TLS")
    if isinstance(exc, OSError):
        return BmcUnreachableError.for_host(bmc.name, address, port, text)
    if _AUTH_RE.search(low):
        return BmcAuthError.for_host(bmc.name, address, text)
    if _UNREACHABLE_RE.search(low):
        return BmcUnreachableError.for_host(bmc.name, address, port, text)
    if type(exc).__name__ in _UNSUPPORTED_TYPES or _UNSUPPORTED_RE.search(low):
        return BmcUnsupportedError.for_host(bmc.name, address, what, text)
    return BmcCommandError.for_host(bmc.name, address, what, text)


def certificate_check(bmc: BmcEndpoint) -> Callable[[bytes], bool] | None:
    """pyghmi's verifycallback for this BMC: nothing checked when the inventory says ``bmc_verify:
    false``; else against its CA file when it gives one, else the system's CAs and host name (None:
    pyghmi's own verification)."""
    if not bmc.verify_tls:
        return lambda cert: True
    if bmc.ca_file:
        return ca_verifier(bmc.name, bmc.address, bmc.ca_file)
    return None


class RedfishClient(PyghmiClient):
    """One pyghmi Redfish connection to one BMC, opened on first use and reused."""

    def _connect(self) -> Any:
        from pyghmi.redfish import command as rf_command

        bmc = self.endpoint
        # the port is its own argument: pyghmi resolves ``bmc`` with getaddrinfo, so "host:port"
        # would be looked up as a host name
        return rf_command.Command(bmc.address, bmc.user, bmc.password.reveal(),
                                  verifycallback=certificate_check(bmc), port=bmc.port or DEFAULT_REDFISH_PORT)

    def _classify(self, what: str, exc: BaseException) -> BmcError:
        return classify_redfish_error(self.endpoint, what, exc)

    def get_power(self) -> str:
        """The power state: "on" or "off"."""
        state = str(self._call("power status", lambda c: c.get_power())["powerstate"]).lower()
        return _POWER.get(state, state)

    def set_power(self, action: PowerAction) -> None:
        """Send a power command (a cycle: on when off, force restart when on)."""
        # pyghmi: "boot" = On when off, ForceRestart when on; "reset" = ForceRestart
        state = {PowerAction.ON: "on", PowerAction.OFF: "off", PowerAction.RESET: "reset",
                 PowerAction.CYCLE: "boot"}[action]
        self._call(f"power {action.value}", lambda c: c.set_power(state, wait=False))

    def get_bootdev(self) -> BootSetting:
        """The boot override as the BMC reports it now (not from pyghmi's cache)."""
        def read(c: Any) -> Any:
            # pyghmi answers get_bootdev from a 30-second cache of the system resource (filled when
            # logging in or by an earlier read), so a boot device set meanwhile would read back stale
            c._urlcache.pop(c.sysurl, None)
            return c.get_bootdev()

        return BootSetting.from_pyghmi(self._call("boot device read", read))

    def set_bootdev(self, device: BootDevice, *, persistent: bool = False, uefi: bool = False) -> None:
        """Set the boot source override."""
        self._call(f"boot device {device.value}",
                   lambda c: c.set_bootdev(PYGHMI_BOOTDEV[device], persist=persistent, uefiboot=uefi))

    def get_health(self) -> dict[str, str]:
        """The system's overall health."""
        result = self._call("health read", lambda c: c.get_health())
        bits = result.get("health")
        if not isinstance(bits, int):
            return {"health": str(bits)}
        return {"health": next((name for bit, name in _HEALTH if bits & bit), "ok")}
