"""The BMC interface every protocol implements, and the typed errors it raises.

Messages name the host and say what to check; they never contain a password. Only
BmcUnreachableError is worth retrying: the others will fail the same way again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from toolkit.bmc.endpoint import BmcEndpoint
from toolkit.core.errors import GoldenError


class PowerAction(StrEnum):
    """What a power command asks of a BMC."""
    STATUS = "status"
    ON = "on"
    OFF = "off"
    CYCLE = "cycle"
    RESET = "reset"


class BootDevice(StrEnum):
    """The boot devices golden sets."""
    PXE = "pxe"
    DISK = "disk"


class BmcError(GoldenError):
    """A BMC command failed; ``host`` is the inventory name."""

    retryable = False

    def __init__(self, host: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.host = host


class BmcAuthError(BmcError):
    """The BMC rejected the user name or password."""

    @classmethod
    def for_host(cls, host: str, address: str, detail: str) -> BmcAuthError:
        """The error for a BMC that refused the login, with what to check."""
        return cls(host, f"{host}: BMC {address} rejected the login ({detail}); "
                         "check bmc_user and bmc_password in the inventory")


class BmcUnreachableError(BmcError):
    """No answer from the BMC (wrong address/port, down, or packets lost)."""

    retryable = True

    @classmethod
    def for_host(cls, host: str, address: str, port: int, detail: str) -> BmcUnreachableError:
        """The error for a BMC that did not answer, with what to check."""
        return cls(host, f"{host}: BMC {address}:{port} did not answer ({detail}); "
                         "check bmc_address, bmc_port and that the BMC network is reachable")


class BmcUnsupportedError(BmcError):
    """The BMC does not implement the command (or not in its present state)."""

    @classmethod
    def for_host(cls, host: str, address: str, what: str, detail: str) -> BmcUnsupportedError:
        """The error for a BMC that lacks a feature, with what to do."""
        return cls(host, f"{host}: BMC {address} does not support {what} ({detail}); "
                         "check the BMC firmware or use another bmc_protocol")


class BmcCommandError(BmcError):
    """The BMC understood the command and answered with an error."""

    @classmethod
    def for_host(cls, host: str, address: str, what: str, detail: str) -> BmcCommandError:
        """The error for a BMC that refused a command."""
        return cls(host, f"{host}: BMC {address} refused {what} ({detail}); check the BMC's event log")


@dataclass(frozen=True)
class BootSetting:
    """A BMC's boot override as read back."""
    device: str  # "pxe", "disk", or whatever else the BMC reports
    persistent: bool = False
    uefi: bool = False

    @classmethod
    def from_pyghmi(cls, result: dict[str, object]) -> BootSetting:
        """From the answer of pyghmi's get_bootdev (IPMI and Redfish alike)."""
        dev = str(result.get("bootdev", "default"))
        return cls(device=_FROM_PYGHMI.get(dev, dev), persistent=bool(result.get("persistent")),
                   uefi=bool(result.get("uefimode")))


# pyghmi's boot device names (both of its clients use them) for ours, and back
PYGHMI_BOOTDEV = {BootDevice.PXE: "network", BootDevice.DISK: "hd"}
_FROM_PYGHMI = {"network": "pxe", "hd": "disk", "default": "default"}


class BmcClient(Protocol):
    """One logged-in connection to one BMC. Not thread-safe: the pool serialises use per BMC."""

    host: str

    def get_power(self) -> str:
        """The power state: "on" or "off"."""

    def set_power(self, action: PowerAction) -> None:
        """Send a power command and return (callers poll get_power)."""

    def get_bootdev(self) -> BootSetting:
        """The boot override as the BMC reports it."""

    def set_bootdev(self, device: BootDevice, *, persistent: bool = False, uefi: bool = False) -> None:
        """Set the next boot (or every boot, with ``persistent``) to ``device``."""

    def get_health(self) -> dict[str, str]:
        """The BMC's overall health reading."""

    def close(self) -> None:
        """End the session."""


class PyghmiClient:
    """What the IPMI and Redfish clients share: one lazily opened pyghmi session per BMC, every
    call classified into our typed errors, and a broken session dropped so the next try logs in anew.

    Subclasses provide ``_connect()`` (open the pyghmi Command) and ``_classify(what, exc)``.
    """

    def __init__(self, endpoint: BmcEndpoint) -> None:
        if not endpoint.address:
            raise BmcCommandError(endpoint.name, f"{endpoint.name}: no bmc_address in the inventory",
                                  hint="add bmc_address (and bmc_user, bmc_password) to the host's vars")
        self.host = endpoint.name
        self.endpoint = endpoint
        self._cmd: Any = None

    def _connect(self) -> Any:
        raise NotImplementedError

    def _classify(self, what: str, exc: BaseException) -> BmcError:
        raise NotImplementedError

    def _drop(self) -> None:
        self._cmd = None

    def _command(self) -> Any:
        if self._cmd is None:
            try:
                self._cmd = self._connect()
            except GoldenError:  # ours already (a BMC error, or a bad CA file in the inventory)
                raise
            except Exception as exc:
                raise self._classify("login", exc) from None
        return self._cmd

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        cmd = self._command()
        try:
            result = fn(cmd)
        except Exception as exc:
            err = self._classify(what, exc)
            if err.retryable:
                self._drop()  # the session is broken; the next attempt logs in afresh
            raise err from None
        if isinstance(result, dict) and "error" in result:
            # pyghmi reports some failures as a return value, not an exception
            raise self._classify(what, self._result_error(result))
        return result

    def _result_error(self, result: dict[str, Any]) -> BaseException:
        return RuntimeError(str(result["error"]))

    def close(self) -> None:
        """Log out and drop the session."""
        self._drop()
