"""A lab BMC that speaks Redfish over HTTPS: one ComputerSystem in front of a lab machine.

It answers what golden's Redfish client (pyghmi's) uses and no more: the service root, one
system with ``PowerState``, ``Boot`` (the override, PATCHed) and ``Actions/#ComputerSystem.Reset``,
and one manager, with HTTP basic auth. The certificate is the lab's (``toolkit.lab.tlsca``: a lab
CA issues one for the loopback address), so a lab inventory can name the CA in ``bmc_ca_file``
and the client verifies it exactly as it would a datacenter BMC's. sushy-tools' emulator drives
libvirt, not the lab's QEMU processes, hence this.

The machine (``vbmc.SimMachine`` or ``QemuMachine``) is shared with the virtual-BMC process's
status file, which lists the power actions each BMC carried out (``power_actions``): the record a
test reads to tell that a refused client power-cycled nothing. Requests are served on a thread
per connection; one lock per BMC keeps them in order.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.lab.vbmc import BmcConfig, SimMachine

log = logging.getLogger("golden.vbmc.redfish")

ROOT = "/redfish/v1/"
SYSTEMS = "/redfish/v1/Systems"
MANAGERS = "/redfish/v1/Managers"
MANAGER = "/redfish/v1/Managers/bmc"
MAX_BODY = 64 * 1024
# Redfish BootSourceOverrideTarget <-> the override words the lab machines use (as IPMI sets them)
_TARGET_TO_DEVICE = {"Pxe": "network", "Hdd": "hd", "Cd": "optical", "BiosSetup": "setup", "None": "default"}
_DEVICE_TO_TARGET = {v: k for k, v in _TARGET_TO_DEVICE.items()}
# ResetType -> the machine's action, by name
_RESETS = {"On": "power_on", "ForceOff": "power_off", "GracefulShutdown": "power_off",
           "ForceRestart": "reset", "GracefulRestart": "reset", "PowerCycle": "reset"}


class RedfishBmc:
    """One HTTPS Redfish BMC on ``cfg.address:cfg.port`` in front of ``machine``."""

    def __init__(self, cfg: BmcConfig, machine: SimMachine, on_change: Callable[[], None]) -> None:
        self.name, self.port, self.machine, self.on_change = cfg.name, cfg.port, machine, on_change
        self.system = f"{SYSTEMS}/{cfg.name}"
        self._auth = "Basic " + base64.b64encode(f"{cfg.user}:{cfg.password}".encode()).decode()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((cfg.address, cfg.port), _handler(self))
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"redfish-{cfg.name}", daemon=True)

    def start(self) -> None:
        """Serve on a thread of its own."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving (the machine is the caller's to stop)."""
        self.server.shutdown()
        self.server.server_close()

    def authorized(self, header: str | None) -> bool:
        """Whether the request's Authorization header carries this BMC's login."""
        return header is not None and hmac.compare_digest(header.encode(), self._auth.encode())

    def resource(self, path: str) -> dict[str, Any] | None:
        """The JSON resource at ``path``, or None."""
        path = path.split("?", 1)[0]
        docs: dict[str, Callable[[], dict[str, Any]]] = {
            ROOT: _service_root, ROOT.rstrip("/"): _service_root,
            SYSTEMS: lambda: _collection(SYSTEMS, [self.system]),
            MANAGERS: lambda: _collection(MANAGERS, [MANAGER]),
            MANAGER: lambda: {"@odata.id": MANAGER, "Id": "bmc", "Name": f"{self.name} lab BMC"},
            self.system: self._system,
        }
        make = docs.get(path)
        return make() if make else None

    def _system(self) -> dict[str, Any]:
        m = self.machine
        override = {"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "None",
                    "BootSourceOverrideMode": "UEFI" if m.uefi else "Legacy"}
        if m.bootdev != "default":
            override |= {"BootSourceOverrideEnabled": "Continuous" if m.persistent else "Once",
                         "BootSourceOverrideTarget": _DEVICE_TO_TARGET.get(m.bootdev, "None")}
        return {"@odata.id": self.system, "Id": self.name, "Name": self.name,
                "PowerState": "On" if m.power_state() else "Off", "Boot": override,
                "Status": {"State": "Enabled", "Health": "OK", "HealthRollup": "OK"},
                "Actions": {"#ComputerSystem.Reset": {"target": f"{self.system}/Actions/ComputerSystem.Reset"}}}

    def reset(self, body: dict[str, Any]) -> int:
        """Carry out a ComputerSystem.Reset; the HTTP status."""
        action = _RESETS.get(str(body.get("ResetType")))
        if action is None:
            return 400
        m = self.machine
        m.record_action(str(body["ResetType"]))
        getattr(m, action)()
        self.on_change()
        return 204

    def patch_boot(self, body: dict[str, Any]) -> int:
        """Set the boot override from a PATCH of the system; the HTTP status."""
        boot = body.get("Boot")
        if not isinstance(boot, dict):
            return 400
        m = self.machine
        enabled = boot.get("BootSourceOverrideEnabled", "Once")
        device = "default" if enabled == "Disabled" else _TARGET_TO_DEVICE.get(boot.get("BootSourceOverrideTarget", ""))
        if device is None:
            return 400
        uefi = boot.get("BootSourceOverrideMode", "UEFI" if m.uefi else "Legacy") == "UEFI"
        m.set_override(device, persistent=enabled == "Continuous", uefi=uefi)
        self.on_change()
        return 204


def _service_root() -> dict[str, Any]:
    return {"@odata.id": ROOT, "RedfishVersion": "1.6.0", "Systems": {"@odata.id": SYSTEMS},
            "Managers": {"@odata.id": MANAGERS}}


def _collection(path: str, members: list[str]) -> dict[str, Any]:
    return {"@odata.id": path, "Members": [{"@odata.id": m} for m in members], "Members@odata.count": len(members)}


def _handler(bmc: RedfishBmc) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s: " + fmt, bmc.name, *args)

        def _send(self, status: int, doc: dict[str, Any] | None = None) -> None:
            body = json.dumps(doc).encode() if doc is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> dict[str, Any] | None:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                return None
            try:
                doc = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None

        def _guarded(self, act: Callable[[], None]) -> None:
            # the service root is public, as Redfish has it; everything else wants the login
            if self.path.split("?", 1)[0] not in (ROOT, ROOT.rstrip("/")) and not bmc.authorized(
                    self.headers.get("Authorization")):
                self._send(401, {"error": {"code": "Base.1.0.AccessDenied", "message": "Access Denied"}})
                return
            with bmc.lock:
                act()

        def do_GET(self) -> None:
            def get() -> None:
                doc = bmc.resource(self.path)
                self._send(200 if doc is not None else 404, doc or {})
            self._guarded(get)

        def do_POST(self) -> None:
            def post() -> None:
                body = self._body()
                if self.path == f"{bmc.system}/Actions/ComputerSystem.Reset" and body is not None:
                    self._send(bmc.reset(body))
                else:
                    self._send(404 if body is not None else 400, {})
            self._guarded(post)

        def do_PATCH(self) -> None:
            def patch() -> None:
                body = self._body()
                if self.path == bmc.system and body is not None:
                    self._send(bmc.patch_boot(body))
                else:
                    self._send(404 if body is not None else 400, {})
            self._guarded(patch)

    return Handler
