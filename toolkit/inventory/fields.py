"""golden's host fields, checked after Ansible resolved a host's vars: MAC, BMC endpoint, image, UEFI, install.

Pure: every function takes plain values and either returns the typed field or raises
``FieldError`` with the problem and, where it helps, a hint (``check_ca_file`` alone reads a
file: a CA that cannot be used is bad input now, not a surprise at the first BMC call). The loader adds the host, the
variable and the file Ansible says the value came from.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.bmc.endpoint import BmcProtocol, default_port
from toolkit.core.mac import MacError, normalize_mac
from toolkit.image.ref import ImageRefError, parse_image_ref
from toolkit.install.settings import DiskSettings, InstallMode, check_device, check_mount, parse_size

# Ansible's boolean filter (ansible.module_utils.parsing.convert_bool), kept here so the check needs no import.
# (1 also stands for 1.0 and True, 0 for 0.0 and False: they hash alike)
BOOL_TRUE = frozenset({"y", "yes", "on", "1", "true", "t", 1})
BOOL_FALSE = frozenset({"n", "no", "off", "0", "false", "f", 0})
GOLDEN_VARS = ("mac", "bmc_address", "bmc_port", "bmc_protocol", "bmc_user", "bmc_password", "bmc_ca_file",
               "bmc_verify", "image", "uefi", "install", "disk_device", "disk_esp_size", "disk_slot_size",
               "disk_data_mount", "disk_boot_tries")
# The least an ESP (systemd-boot, two slots' kernels and initrds) and a slot may be given.
MIN_SIZES = {"disk_esp_size": 64 << 20, "disk_slot_size": 256 << 20}
MAX_BOOT_TRIES = 16


class FieldError(ValueError):
    """One golden field has an unusable value (``var`` names it)."""

    def __init__(self, var: str, problem: str, hint: str | None = None) -> None:
        super().__init__(f"{var} {problem}")
        self.var, self.problem, self.hint = var, problem, hint


@dataclass(frozen=True)
class BmcFields:
    """A host's BMC variables, checked."""
    address: str
    port: int
    protocol: BmcProtocol
    user: str
    verify: bool = True  # Redfish: verify the BMC's TLS certificate
    ca_file: str | None = None  # Redfish: against this CA (absolute), else the system's CAs


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(var: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError(var, f"must be a string, got {type(value).__name__} {_show(value)}")
    return str(value)


def check_mac(value: Any) -> str | None:
    """The MAC in lower-case colon form. YAML 1.1 reads an unquoted 52:54:00:00:01:01 as a base-60 integer."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise FieldError("mac", f"is the number {value}, not a MAC address (YAML reads an unquoted MAC "
                         "of digits as a base-60 integer)", hint='quote it: mac: "52:54:00:00:01:01"')
    text = _text("mac", value) or ""
    try:
        return normalize_mac(text)
    except MacError:
        raise FieldError("mac", f"{_show(text)} is not a MAC address like 52:54:00:12:34:56") from None


def check_image(value: Any) -> str | None:
    """``<name>@<channel>`` or ``<name>@<build-id>``, in the shapes the store accepts."""
    text = _text("image", value)
    if text is None:
        return None
    try:
        parse_image_ref(text)  # the one image reference parser
    except ImageRefError as exc:
        raise FieldError("image", f"{_show(text)} must be '<name>@<channel>' or '<name>@<build-id>'",
                         hint=exc.hint) from None
    return text


def check_bool(var: str, value: Any, default: bool = False) -> bool:
    """A boolean as Ansible's ``bool`` filter reads it: true/false, yes/no, on/off, 1/0."""
    if value is None:
        return default
    key = value.strip().lower() if isinstance(value, str) else value
    try:
        if key in BOOL_TRUE:
            return True
        if key in BOOL_FALSE:
            return False
    except TypeError:  # unhashable: a list or a mapping
        pass
    raise FieldError(var, f"{_show(value)} is not a boolean", hint="use true or false")


def check_port(value: Any, protocol: BmcProtocol) -> int:
    """The BMC port (the protocol's default when unset); FieldError when it is not one."""
    if value is None:
        return default_port(protocol)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FieldError("bmc_port", f"{_show(value)} is not a port number")
    try:
        port = int(value)
    except ValueError:
        raise FieldError("bmc_port", f"{_show(value)} is not a port number") from None
    if not 0 < port < 65536:
        raise FieldError("bmc_port", f"{port} is outside 1..65535")
    return port


def check_protocol(value: Any) -> BmcProtocol:
    """The BMC protocol (ipmi when unset); FieldError when unknown."""
    text = (_text("bmc_protocol", value) or "ipmi").lower()
    try:
        return BmcProtocol(text)
    except ValueError:
        choices = ", ".join(p.value for p in BmcProtocol)
        raise FieldError("bmc_protocol", f"{_show(text)} must be one of {choices}") from None


def check_verify(value: Any) -> bool:
    """``bmc_verify``: a real YAML/JSON boolean (true unless set), not Ansible's looser words. A
    security switch spelled "no" or "0" is too easy to get by accident, and INI has no booleans at
    all, so the INI words true/false are the only strings accepted."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise FieldError("bmc_verify", f"{_show(value)} is not a boolean", hint="use true or false")


def check_ca_file(value: Any, base: Path) -> str | None:
    """``bmc_ca_file`` as an absolute path (a relative one is taken from ``base``, the folder of the
    file that set it), after checking that it holds PEM certificates."""
    text = _text("bmc_ca_file", value)
    if not text:
        return None
    path = os.path.normpath(base / Path(text).expanduser())
    try:
        st = os.stat(path)
        stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None
    problem = _ca_problem(path, stamp)
    if problem is not None:
        raise FieldError("bmc_ca_file", str(problem), hint=problem.hint)
    return path


@functools.lru_cache(maxsize=64)
def _ca_problem(path: str, stamp: tuple[int, int] | None) -> Any:
    """Why the CA file cannot be used (a CaFileError), or None; read once per version of the file,
    not once per host (a rack's hosts all name the same CA)."""
    from toolkit.bmc.tls import CaFileError, read_ca  # cryptography: only when a host names a CA

    try:
        read_ca(path)
    except CaFileError as exc:
        return exc
    return None


def check_bmc(values: dict[str, Any], base: Path = Path()) -> BmcFields | None:
    """The BMC endpoint fields, or None when the host names no ``bmc_address``."""
    address = _text("bmc_address", values.get("bmc_address"))
    protocol = check_protocol(values.get("bmc_protocol"))
    port = check_port(values.get("bmc_port"), protocol)
    user = _text("bmc_user", values.get("bmc_user")) or ""
    verify = check_verify(values.get("bmc_verify"))
    ca_file = check_ca_file(values.get("bmc_ca_file"), base)
    if not address:
        return None
    return BmcFields(address=address, port=port, protocol=protocol, user=user, verify=verify, ca_file=ca_file)


def check_install(value: Any) -> InstallMode:
    """``install``: ram (the default) or disk; FieldError naming both otherwise."""
    text = _text("install", value) or InstallMode.RAM.value
    try:
        return InstallMode(text)
    except ValueError:
        choices = ", ".join(m.value for m in InstallMode)
        raise FieldError("install", f"{_show(text)} must be one of {choices}") from None


def check_size(var: str, value: Any, default: int) -> int:
    """A disk size variable (``512M``, ``8G``): bytes, at least ``MIN_SIZES[var]``; FieldError otherwise."""
    text = _text(var, value)
    if text is None:
        return default
    try:
        size = parse_size(text)
    except ValueError:
        raise FieldError(var, f"{_show(text)} is not a size", hint="use a size with a unit, like 512M or 8G") from None
    if size < MIN_SIZES[var]:
        raise FieldError(var, f"{_show(text)} is below the least allowed, {MIN_SIZES[var] >> 20}M")
    return size


def check_tries(value: Any) -> int:
    """``disk_boot_tries``: how many boots a new slot gets before falling back, 1 to 16."""
    if value is None:
        return DiskSettings.boot_tries
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BOOT_TRIES:
        raise FieldError("disk_boot_tries", f"{_show(value)} must be a whole number from 1 to {MAX_BOOT_TRIES}")
    return value


def _checked(var: str, value: Any, check: Callable[[str], str], default: str) -> str:
    text = _text(var, value)
    if text is None:
        return default
    try:
        return check(text)
    except ValueError as exc:
        raise FieldError(var, str(exc)) from None


def check_disk(values: dict[str, Any]) -> DiskSettings:
    """The ``disk_*`` variables with their defaults, each checked (on RAM hosts too: a bad value is
    bad wherever it is set)."""
    d = DiskSettings()
    return DiskSettings(device=_checked("disk_device", values.get("disk_device"), check_device, d.device),
                        esp_bytes=check_size("disk_esp_size", values.get("disk_esp_size"), d.esp_bytes),
                        slot_bytes=check_size("disk_slot_size", values.get("disk_slot_size"), d.slot_bytes),
                        data_mount=_checked("disk_data_mount", values.get("disk_data_mount"), check_mount,
                                            d.data_mount),
                        boot_tries=check_tries(values.get("disk_boot_tries")))
