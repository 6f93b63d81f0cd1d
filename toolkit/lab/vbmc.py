"""Virtual BMCs: real IPMI 2.0 (RMCP+) on loopback UDP ports, built on pyghmi's Bmc server class.

One process hosts many BMCs: every BMC is one UDP socket, and pyghmi's single IO thread selects
over all of them, so a thousand simulated BMCs cost a thousand sockets, not a thousand threads.
(select() stops at fd 1024, hence MAX_BMCS_PER_PROCESS; the lab starts more processes beyond it.)

Each BMC drives a machine:
- QemuMachine: power on starts a QEMU process, off kills it, reset/cycle restart it; the boot
  device set over IPMI decides whether the next start netboots (one-time unless persistent).
  The override's boot mode (the IPMI boot flag "EFI") must match the firmware: a UEFI machine
  (OVMF, no legacy CSM) carries out only a UEFI PXE override and a BIOS one only a legacy one; the
  other kind is not honoured and the machine boots its default order, the disk, as a server whose
  firmware cannot boot that way does. Every override received is kept (``overrides`` in the status).
- SimMachine (--no-vm): a power state only, with configurable command latency, failure rate,
  boot time, and a deterministic, seeded rate of dropped replies (to exercise client retries).

A BMC whose config says ``protocol: redfish`` speaks Redfish over HTTPS on a TCP port instead
(``toolkit.lab.redfishbmc``, with the lab CA's certificate) in front of the same machines. Every
power action a BMC carries out is kept (``power_actions`` in the status), whichever protocol.

Every BMC serves Serial-over-LAN (``ipmitool sol activate``/``sol info``, pyghmi's Console): the
QEMU machine's serial socket, or a simulated machine's generated console (see toolkit.lab.sol).
One SOL session per BMC, as on real ones; a session whose client went silent for SOL_STALE_S
(killed without deactivating) is taken over by the next activation.

Credentials come from a 0600 JSON file, never from argv.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyghmi.ipmi import bmc as pyghmi_bmc
from pyghmi.ipmi.private import serversession
from pyghmi.ipmi.private import session as ipmisession

from toolkit.bmc import pyghmi_fixes
from toolkit.core.fsutil import atomic_write
from toolkit.core.run import kill_group
from toolkit.lab import simboot
from toolkit.lab.hardware import fitted
from toolkit.lab.qemu import VmSpec, console_socket_path, start_vm
from toolkit.lab.redfishbmc import RedfishBmc
from toolkit.lab.sol import SimConsole, SolBmc, connect_unix

log = logging.getLogger("golden.vbmc")

MAX_BMCS_PER_PROCESS = 800
_SHA1 = 1
_RMCP_NO_CIPHER_SUITE_MATCH = 0x11
# IPMI boot flags (parameter 5, data byte 1): valid, persistent, boot type EFI
_FLAG_VALID, _FLAG_PERSISTENT, _FLAG_EFI = 0x80, 0x40, 0x20
MAX_OVERRIDES_KEPT = 20


@dataclass
class SimOptions:
    """How a simulated BMC misbehaves: latency, failures, lost replies, boot time."""
    latency: float = 0.0  # seconds added to every chassis command
    fail_rate: float = 0.0  # share of power commands answered with completion code 0xff
    drop_rate: float = 0.0  # share of replies never sent
    boot_time: float = 0.0  # seconds from power on until the machine counts as booted
    seed: int = 0
    # Boot server as this process reaches it; when set, a simulated machine netboots on power on
    # (script, first MiB of each artifact, agent report) like a real node with an empty disk.
    boot_url: str | None = None


@dataclass
class BmcConfig:
    """One virtual BMC: its name, port, login and machine."""
    name: str
    port: int
    user: str
    password: str
    mac: str
    address: str = "127.0.0.1"
    vm: dict[str, Any] | None = None  # VmSpec fields for a QEMU machine; None = simulated
    protocol: str = "ipmi"  # or "redfish": HTTPS with tls_cert and tls_key (PEM files)
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass
class ServeConfig:
    """What one virtual-BMC server process runs."""
    bmcs: list[BmcConfig]
    sim: SimOptions = field(default_factory=SimOptions)
    status_file: str | None = None
    pid_file: str | None = None

    @classmethod
    def load(cls, path: Path) -> ServeConfig:
        """The configuration written at ``path``."""
        data = json.loads(path.read_text())
        return cls(bmcs=[BmcConfig(**b) for b in data["bmcs"]], sim=SimOptions(**data.get("sim", {})),
                   status_file=data.get("status_file"), pid_file=data.get("pid_file"))

    def dump(self) -> dict[str, Any]:
        """The configuration as JSON data."""
        return {"bmcs": [asdict(b) for b in self.bmcs], "sim": asdict(self.sim),
                "status_file": self.status_file, "pid_file": self.pid_file}


# ---------------------------------------------------------------------------------------------
# machines


class SimMachine:
    """A machine behind a virtual BMC, simulated: power, boot override, boot time."""
    def __init__(self, opts: SimOptions, rng: random.Random, mac: str = "",
                 booter: ThreadPoolExecutor | None = None, name: str = "") -> None:
        self.opts = opts
        self.rng = rng
        self.mac = mac
        self.booter = booter
        self.on = False
        self.powered_at = 0.0
        self.bootdev = "default"
        self.persistent = False
        self.uefi = False  # the override's boot type is EFI
        self.overrides: list[str] = []  # every override received, oldest first: "network once uefi"
        self.actions: list[str] = []  # every power action its BMC carried out, oldest first
        self.console = SimConsole(name or mac or "machine")

    def record_action(self, action: str) -> None:
        """Keep a power action as the BMC received it (IPMI "on"/"reset", Redfish "ForceRestart")."""
        self.actions = [*self.actions, action][-MAX_OVERRIDES_KEPT:]

    def open_console(self) -> Any:
        """A connection to the machine's serial console (a socket)."""
        return self.console.open()

    def console_log(self) -> Path | None:
        """A file the console's output is also written to (None: the socket alone carries it)."""
        return None

    def set_override(self, device: str, *, persistent: bool, uefi: bool) -> None:
        """Record a boot override as the BMC received it."""
        self.bootdev, self.persistent, self.uefi = device, persistent, uefi
        self.overrides = [*self.overrides, describe_override(device, persistent=persistent, uefi=uefi)][
            -MAX_OVERRIDES_KEPT:]

    def power_state(self) -> bool:
        """True when on."""
        return self.on

    def booted(self) -> bool:
        """True once on for the boot time."""
        return self.on and time.monotonic() - self.powered_at >= self.opts.boot_time

    def _fails(self) -> bool:
        return self.opts.fail_rate > 0 and self.rng.random() < self.opts.fail_rate

    def power_on(self) -> int:
        """Power on; an IPMI completion code (0xFF for a simulated failure)."""
        if self._fails():
            return 0xFF
        if not self.on:
            self.on, self.powered_at = True, time.monotonic()
            self.console.say(f"power on, booting from {self._consume_bootdev()}")
            self._netboot()
        return 0

    def power_off(self) -> int:
        """Power off; an IPMI completion code."""
        if self._fails():
            return 0xFF
        self.on = False
        self.console.say("power off")
        return 0

    def reset(self) -> int:
        """Reset (and boot again); an IPMI completion code."""
        if self._fails():
            return 0xFF
        self.on, self.powered_at = True, time.monotonic()
        self.console.say(f"reset, booting from {self._consume_bootdev()}")
        self._netboot()
        return 0

    def _netboot(self) -> None:
        if self.booter is None or not self.opts.boot_url:
            return
        url, mac, delay, console = self.opts.boot_url, self.mac, self.opts.boot_time, self.console

        def boot() -> None:
            result = simboot.netboot(url, mac, boot_time=delay)
            log.info("%s", result)
            console.say(f"netboot: {result}")

        self.booter.submit(boot)

    def _consume_bootdev(self) -> str:
        dev = self.bootdev
        if not self.persistent:
            self.bootdev, self.uefi = "default", False
        return dev

    def poll(self) -> bool:
        """False: a simulated machine never exits by itself."""
        return False

    def stop(self) -> None:
        """Power off for good."""
        self.on = False

    def describe(self) -> dict[str, Any]:
        """Power, boot device and overrides, for the status file."""
        return {"power": "on" if self.on else "off", "bootdev": self.bootdev, "overrides": self.overrides,
                "power_actions": self.actions}


def describe_override(device: str, *, persistent: bool, uefi: bool) -> str:
    """A boot override in words: ``pxe once legacy``."""
    return f"{device} {'persistent' if persistent else 'once'} {'uefi' if uefi else 'legacy'}"


def honoured_boot(device: str, *, uefi_override: bool, firmware: str) -> bool:
    """Whether a start after override ``device`` netboots: a network override whose boot mode the
    firmware can carry out (see the module docstring). Pure."""
    return device == "network" and uefi_override == (firmware == "uefi")


class QemuMachine(SimMachine):
    """A real QEMU process behind the BMC."""

    def __init__(self, spec: VmSpec, rng: random.Random) -> None:
        super().__init__(SimOptions(), rng, name=spec.name)
        self.spec = spec
        self.proc: Any = None
        self.boots = 0

    def open_console(self) -> Any:
        """A connection to QEMU's serial socket (OSError while QEMU is not running)."""
        return connect_unix(console_socket_path(self.spec))

    def console_log(self) -> Path | None:
        """QEMU's serial log, a new file on each start (see _start): SOL follows it (toolkit.lab.sol)."""
        return self.spec.serial_log if self.spec.console_socket else None

    def power_state(self) -> bool:
        """True while its QEMU process runs."""
        return self.proc is not None and self.proc.poll() is None

    def _start(self) -> None:
        uefi = self.uefi
        dev = self._consume_bootdev()
        network = honoured_boot(dev, uefi_override=uefi, firmware=self.spec.firmware)
        if dev == "network" and not network:
            log.warning("%s: %s PXE override not honoured by %s firmware; booting the disk", self.spec.name,
                        "a UEFI" if uefi else "a legacy", self.spec.firmware.upper())
        spec = fitted(VmSpec(**{**asdict(self.spec), "boot_network": network}))  # hardware as it is now
        # QEMU would truncate its log in place; a new file lets an SOL session that follows the old one
        # tell the new boot's output from the old (lab.sol.SolBridge)
        spec.serial_log.unlink(missing_ok=True)
        self.proc = start_vm(spec)
        self.boots += 1
        log.info("%s: started QEMU pid %d (%s boot, %s)", spec.name, self.proc.pid,
                 "network" if spec.boot_network else "disk", spec.firmware.upper())

    def power_on(self) -> int:
        """Start QEMU unless it runs."""
        if not self.power_state():
            self._start()
        return 0

    def power_off(self) -> int:
        """Stop QEMU."""
        self.stop()
        return 0

    def reset(self) -> int:
        """Restart QEMU (it boots from the current override)."""
        self.stop()
        self._start()
        return 0

    def poll(self) -> bool:
        """True when the QEMU process went away on its own since the last look (guest powered off)."""
        if self.proc is not None and self.proc.poll() is not None:
            self.proc = None
            return True
        return False

    def stop(self) -> None:
        """Kill QEMU and its process group."""
        if self.proc is not None:
            kill_group(self.proc, grace=3.0)
            self.proc = None

    def describe(self) -> dict[str, Any]:
        """As SimMachine's, with QEMU's PID."""
        d = super().describe()
        d["power"] = "on" if self.power_state() else "off"
        d["pid"] = self.proc.pid if self.proc is not None else None
        d["boots"] = self.boots
        return d


# ---------------------------------------------------------------------------------------------
# the IPMI side


class _Sha1OnlySession(serversession.ServerSession):
    """pyghmi's server always answers with SHA-1 algorithms even when SHA-256 (suite 17) was
    proposed, and pyghmi's own client then fails in RAKP2. Declining non-SHA-1 proposals makes
    clients fall back to suite 3, which is what the server really speaks."""

    # pyghmi's SOL console unregisters its keepalive when a client stops acknowledging; a server
    # session never set this up and the console crashed instead of ending
    _customkeepalives = None

    def create_open_session_response(self, request: Any) -> Any:
        auth_algo = request[12] & 0x3F if len(request) > 12 else _SHA1
        integrity_algo = request[20] & 0x3F if len(request) > 20 else _SHA1
        if auth_algo != _SHA1 or integrity_algo not in (0, _SHA1):
            self.clientsessionid = request[4:8]
            self.managedsessionid = os.urandom(4)
            return bytearray([request[0], _RMCP_NO_CIPHER_SUITE_MATCH, 0, 0]) + self.clientsessionid
        return super().create_open_session_response(request)

    def sessionless_data(self, data: Any, sockaddr: Any) -> None:
        # pyghmi routes a packet here when a client address is reused after its session went away
        self.bmc.sessionless_data(data, sockaddr)

    def close_server_session(self) -> None:
        """The client closed the session: an SOL it held is free again."""
        self.bmc.session_closed(self)

    def _xmit_packet(self, retry: bool = True, delay_xmit: Any = None, timeout: Any = None) -> None:
        if self.bmc.drop_reply():
            if self.sequencenumber:
                self.sequencenumber += 1
            return
        super()._xmit_packet(retry=retry, delay_xmit=delay_xmit, timeout=timeout)


class VirtualBmc(SolBmc, pyghmi_bmc.Bmc):
    """An IPMI BMC on a UDP port (pyghmi's server) in front of a simulated or QEMU machine."""
    def __init__(self, cfg: BmcConfig, machine: SimMachine, opts: SimOptions, rng: random.Random,
                 defer: Callable[[float, Callable[[], None]], None], on_change: Callable[[], None]) -> None:
        super().__init__({cfg.user: cfg.password}, port=cfg.port, address=cfg.address)
        self.name = cfg.name
        self.machine = machine
        self.opts = opts
        self.rng = rng
        self.defer = defer
        self.on_change = on_change

    def drop_reply(self) -> bool:
        """True when this reply is to be lost (``drop_rate``)."""
        return self.opts.drop_rate > 0 and self.rng.random() < self.opts.drop_rate

    # sessionless replies are dropped at the same rate as session ones
    def send_auth_cap(self, *args: Any) -> None:
        """pyghmi's reply, unless it is dropped."""
        if not self.drop_reply():
            super().send_auth_cap(*args)

    def send_cipher_suites(self, *args: Any) -> None:
        """pyghmi's reply, unless it is dropped."""
        if not self.drop_reply():
            super().send_cipher_suites(*args)

    def sessionless_data(self, data: Any, sockaddr: Any) -> None:
        """pyghmi's handler, but RMCP+ open-session requests get a SHA-1-only session (see _Sha1OnlySession)."""
        if len(data) >= 22 and data[0] == 6 and data[2:4] == b"\xff\x07" and data[4] == 6 and data[5] == 16:
            _Sha1OnlySession(self.authdata, self.kg, sockaddr, self.serversocket, bytearray(data)[16:],
                             self.uuid, bmc=self)
            return
        super().sessionless_data(data, sockaddr)

    def handle_raw_request(self, request: dict[str, Any], session: Any) -> None:
        """pyghmi's handler, chassis commands delayed by ``latency``."""
        if self.opts.latency > 0 and request["netfn"] == 0:
            self.defer(self.opts.latency, lambda: super(VirtualBmc, self).handle_raw_request(request, session))
            return
        if not self._sol_request(request, session):
            super().handle_raw_request(request, session)

    # pyghmi calls these from control_chassis / get_chassis_status
    def get_power_state(self) -> str:
        """"on" or "off"."""
        return "on" if self.machine.power_state() else "off"

    def power_on(self) -> int:
        """Power the machine on."""
        self.machine.record_action("on")
        rc = self.machine.power_on()
        self.on_change()
        return rc

    def power_off(self) -> int:
        """Power the machine off."""
        self.machine.record_action("off")
        rc = self.machine.power_off()
        self.on_change()
        return rc

    def power_shutdown(self) -> int:
        """As power_off (no guest to ask)."""
        return self.power_off()

    def power_reset(self) -> int:
        """Reset the machine."""
        self.machine.record_action("reset")
        rc = self.machine.reset()
        self.on_change()
        return rc

    def power_cycle(self) -> int:
        """Reset a machine that is on; 0xD5 for one that is off, as IPMI says."""
        if not self.machine.power_state():
            return 0xD5  # IPMI: power cycle is not valid in the "off" state
        return self.power_reset()

    def get_boot_device(self) -> str:
        """The current boot device."""
        return self.machine.bootdev

    def set_boot_device(self, bootdevice: str) -> None:
        """Set the override with the persistent and EFI flags of the same request."""
        flags = self._pending_flags
        self.machine.set_override(bootdevice, persistent=bool(flags & _FLAG_PERSISTENT), uefi=bool(flags & _FLAG_EFI))
        log.info("%s: boot override %s", self.name, self.machine.overrides[-1])
        self.on_change()

    def get_system_boot_options(self, request: dict[str, Any], session: Any) -> None:
        """Boot flags (parameter 5) answered from the machine's override; the rest by pyghmi."""
        if request["data"][0] == 5:
            from pyghmi.ipmi import command as ipmicommand

            dev = ipmicommand.boot_devices.get(self.machine.bootdev, 0)
            flags = (_FLAG_VALID | (_FLAG_PERSISTENT if self.machine.persistent else 0)
                     | (_FLAG_EFI if self.machine.uefi else 0))
            session.send_ipmi_response(data=[1, 5, flags, dev, 0, 0, 0])
            return
        super().get_system_boot_options(request, session)

    _pending_flags = 0

    def set_system_boot_options(self, request: dict[str, Any], session: Any) -> None:
        """Remember the request's flags byte, then pyghmi's handler."""
        data = request["data"]
        # pyghmi's server parses the device and calls set_boot_device; the flags byte is ours to read
        self._pending_flags = data[1] if data[0] == 5 and len(data) > 2 else 0
        super().set_system_boot_options(request, session)


# ---------------------------------------------------------------------------------------------
# the serving loop


class _Timers:
    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Callable[[], None]]] = []
        self.n = 0

    def add(self, delay: float, fn: Callable[[], None]) -> None:
        self.n += 1
        heapq.heappush(self.heap, (time.monotonic() + delay, self.n, fn))

    def run_due(self) -> float:
        """Run what is due; return seconds until the next timer (or 0.2 when none)."""
        now = time.monotonic()
        while self.heap and self.heap[0][0] <= now:
            _, _, fn = heapq.heappop(self.heap)
            try:
                fn()
            except Exception:
                log.exception("deferred BMC reply failed")
        return max(0.0, self.heap[0][0] - now) if self.heap else 0.2


def vm_spec(vm: dict[str, Any]) -> VmSpec:
    """A VmSpec from its JSON form in the config: every path field a Path again."""
    fields = dict(vm)
    for key in ("serial_log", "disk", "tftp_dir", "uefi_vars", "hardware_dir"):
        if fields.get(key):
            fields[key] = Path(fields[key])
    fields["extra_args"] = tuple(fields.get("extra_args", ()))
    fields["hostfwd"] = tuple(tuple(f) for f in fields.get("hostfwd", ()))
    return VmSpec(**fields)


def _write_atomic(path: Path, text: str) -> None:
    atomic_write(path, text, fsync=False)


def _wait_for_packets(ipmi: bool, timeout: float) -> None:
    """Handle IPMI packets for up to ``timeout`` s; with Redfish BMCs only (their own threads), just wait."""
    if not ipmi:
        time.sleep(timeout)
        return
    try:
        ipmisession.Session.wait_for_rsp(timeout=timeout)
    except Exception:
        # one malformed or unexpected packet must not take the whole rack down
        log.exception("error while handling an IPMI packet")


def serve(cfg: ServeConfig) -> int:
    """Serve every configured BMC until SIGTERM/SIGINT; stop every machine on the way out."""
    if len(cfg.bmcs) > MAX_BMCS_PER_PROCESS:
        raise SystemExit(f"at most {MAX_BMCS_PER_PROCESS} BMCs per process (select() limit); got {len(cfg.bmcs)}")
    running = True
    dirty = True

    def stop(signum: int, frame: Any) -> None:
        nonlocal running
        running = False

    def mark() -> None:
        nonlocal dirty
        dirty = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pyghmi_fixes.apply()
    timers = _Timers()
    booter: ThreadPoolExecutor | None = None
    bmcs: list[VirtualBmc | RedfishBmc] = []
    for i, b in enumerate(cfg.bmcs):
        rng = random.Random(f"{cfg.sim.seed}:{b.name}:{i}")
        machine: SimMachine
        if b.vm is not None:
            machine = QemuMachine(vm_spec(b.vm), rng)
        else:
            if cfg.sim.boot_url and booter is None:
                booter = ThreadPoolExecutor(max_workers=32, thread_name_prefix="simboot")
            machine = SimMachine(cfg.sim, rng, b.mac, booter, name=b.name)
        if b.protocol == "redfish":
            bmcs.append(RedfishBmc(b, machine, mark))
        else:
            bmcs.append(VirtualBmc(b, machine, cfg.sim, rng, timers.add, mark))
    for bmc in bmcs:
        if isinstance(bmc, RedfishBmc):
            bmc.start()
    if cfg.pid_file:
        _write_atomic(Path(cfg.pid_file), f"{os.getpid()}\n")
    ipmi_bmcs = [bmc for bmc in bmcs if isinstance(bmc, VirtualBmc)]
    log.info("serving %d BMCs", len(bmcs))
    last_status = 0.0
    try:
        while running:
            consoles = [b for b in ipmi_bmcs if b.bridge is not None]
            _wait_for_packets(bool(ipmi_bmcs), min(timers.run_due(), 0.02 if consoles else 0.2))
            timers.run_due()
            for bmc in consoles:  # console bytes the bridges queued go out from this thread only (lab.sol)
                bmc.pump_sol()
            for bmc in bmcs:
                if bmc.machine.poll():
                    dirty = True
            if cfg.status_file and dirty and time.monotonic() - last_status > 0.3:
                status = {"pid": os.getpid(), "updated": time.time(),
                          "nodes": {bmc.name: {"port": bmc.port, **bmc.machine.describe()} for bmc in bmcs}}
                _write_atomic(Path(cfg.status_file), json.dumps(status, indent=1))
                dirty, last_status = False, time.monotonic()
    finally:
        for bmc in bmcs:
            if isinstance(bmc, RedfishBmc):
                bmc.close()
            else:
                bmc._end_sol()
            bmc.machine.stop()
        if booter is not None:
            booter.shutdown(wait=False, cancel_futures=True)
        for path in (cfg.pid_file, cfg.status_file):
            if path:
                Path(path).unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m toolkit.lab.vbmc CONFIG.json``: the only argument is a path; secrets stay in the file."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m toolkit.lab.vbmc CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    cfg = ServeConfig.load(Path(args[0]))
    return serve(cfg)


if __name__ == "__main__":
    sys.exit(main())

