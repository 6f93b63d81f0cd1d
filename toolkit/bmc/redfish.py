"""Redfish through pyghmi's Redfish client, behind the same interface as IPMI."""

from __future__ import annotations

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
)
from toolkit.inventory import Host


def classify_redfish_error(host: Host, what: str, exc: BaseException) -> BmcError:
    bmc = host.bmc
    address = bmc.address if bmc else "?"
    port = bmc.port if bmc else 0
    text = str(exc).strip() or type(exc).__name__
    if bmc and bmc.password.reveal():
        text = text.replace(bmc.password.reveal(), "***")
    low = text.lower()
    if "401" in low or "unauthorized" in low or "authentication" in low:
        return BmcAuthError.for_host(host.name, address, text)
    if isinstance(exc, OSError) or any(t in low for t in ("timed out", "connection", "unreachable", "refused")):
        return BmcUnreachableError.for_host(host.name, address, port, text)
    if "not supported" in low or "404" in low or "405" in low or "unsupported" in low:
        return BmcUnsupportedError.for_host(host.name, address, what, text)
    return BmcCommandError.for_host(host.name, address, what, text)


class RedfishClient:
    def __init__(self, host: Host, *, verify_tls: bool = False) -> None:
        if host.bmc is None:
            raise BmcCommandError(host.name, f"{host.name}: no bmc_address in the inventory")
        self.host = host.name
        self._host = host
        self._verify = verify_tls
        self._cmd: Any = None

    def _command(self) -> Any:
        if self._cmd is None:
            from pyghmi.redfish import command as rf_command

            bmc = self._host.bmc
            assert bmc is not None
            address = bmc.address if bmc.port in (443, 0) else f"{bmc.address}:{bmc.port}"
            try:
                self._cmd = rf_command.Command(address, bmc.user, bmc.password.reveal(),
                                               verifycallback=(None if self._verify else lambda cert: True))
            except Exception as exc:
                raise classify_redfish_error(self._host, "login", exc) from None
        return self._cmd

    def _call(self, what: str, fn: Any) -> Any:
        cmd = self._command()
        try:
            result = fn(cmd)
        except Exception as exc:
            err = classify_redfish_error(self._host, what, exc)
            if err.retryable:
                self._cmd = None
            raise err from None
        if isinstance(result, dict) and "error" in result:
            raise classify_redfish_error(self._host, what, RuntimeError(str(result["error"])))
        return result

    def get_power(self) -> str:
        return str(self._call("power status", lambda c: c.get_power())["powerstate"])

    def set_power(self, action: PowerAction) -> None:
        state = {PowerAction.ON: "on", PowerAction.OFF: "off", PowerAction.RESET: "reset",
                 PowerAction.CYCLE: "boot"}[action]
        self._call(f"power {action.value}", lambda c: c.set_power(state, wait=False))

    def get_bootdev(self) -> BootSetting:
        return BootSetting.from_pyghmi(self._call("boot device read", lambda c: c.get_bootdev()))

    def set_bootdev(self, device: BootDevice, *, persistent: bool = False, uefi: bool = False) -> None:
        self._call(f"boot device {device.value}",
                   lambda c: c.set_bootdev(PYGHMI_BOOTDEV[device], persist=persistent, uefiboot=uefi))

    def get_health(self) -> dict[str, str]:
        result = self._call("health read", lambda c: c.get_health())
        return {"health": str(result.get("health"))}

    def close(self) -> None:
        self._cmd = None
