"""The virtual lab rack: QEMU machines (or simulated ones) behind virtual BMCs on loopback.

Plan, then act. plan_lab() is pure: node names, MACs, BMC ports, racks. up_lab() writes the
plan and generated BMC credentials into ``<home>/lab/`` (0600 files; credentials never reach
argv), starts the background BMC server process(es) (``python -m toolkit.lab.vbmc <config>``, each
with a pid file, so the lab outlives the CLI), and writes a lab inventory in the same format as
a real one: every host is in group ``lab`` and in a rack group ``lab-rackN``. down_lab() stops
everything and removes the lab folder.

Lab machines netboot through slirp: each has a TFTP folder with ``boot.ipxe`` that chains to
``<boot-url>/boot/${mac}.ipxe``. The default boot URL is ``lab.boot_url`` from golden.yaml, else
http://10.0.2.2:9090 (the default ``golden serve`` address as seen from inside QEMU's slirp).

With ``--bridge BR`` (and ``--netns NS`` when the bridge is in a network namespace) each machine
instead gets a tap in that bridge, created by ``lab up`` and removed by ``lab down``, and boots from
whatever answers DHCP there: in production shape, the dnsmasq proxyDHCP + TFTP that ``golden pxe
render`` configures. ``--uefi`` machines run OVMF, whose own PXE does the first DHCP (no iPXE ROM on
the NIC); it needs a bridge, because slirp's DHCP offers one boot file to every client and cannot
give the firmware ``snponly.efi`` and the iPXE it loads the chain script.

With ``--redfish`` the BMCs speak Redfish over HTTPS (``toolkit.lab.redfishbmc``) on the same TCP
port numbers. ``lab up`` makes a lab CA (``tls/ca.pem``; its private key is not kept) and one
certificate for 127.0.0.1, and the inventory names the CA in ``bmc_ca_file``: the lab's BMCs are
verified as a datacenter's are.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from toolkit.core.config import Settings
from toolkit.core.errors import GoldenError, InputError, ToolMissingError
from toolkit.core.fsutil import atomic_write
from toolkit.core.run import require, run, spawn
from toolkit.lab.hardware import MAX_DISKS, default_hardware, save_hardware
from toolkit.lab.network import LabNetwork, check_network, tap_name
from toolkit.lab.qemu import OVMF_CODE, OVMF_CODE_SECBOOT, OVMF_VARS
from toolkit.lab.tlsca import BmcCa
from toolkit.lab.vbmc import MAX_BMCS_PER_PROCESS, BmcConfig, ServeConfig, SimOptions
from toolkit.trust import secureboot

DEFAULT_BOOT_URL = "http://10.0.2.2:9090"
DEFAULT_BASE_PORT = 16230
PORT_ATTEMPTS = 5
NODES_PER_RACK = 16
LAB_GROUP = "lab"
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
BMC_USER = "admin"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
MAX_VMS = 16


class LabError(GoldenError):
    """The lab could not be started, inspected or stopped."""


@dataclass(frozen=True)
class LabNode:
    """One lab machine as planned: name, MAC, rack, its virtual BMC and shard."""
    name: str
    mac: str
    rack: str
    bmc_port: int
    shard: int
    tap: str | None = None  # the machine's tap in the lab bridge; None: user-mode networking


@dataclass(frozen=True)
class LabPlan:
    """A lab as planned: its nodes, network and whether QEMU machines run."""
    lab_id: str
    nodes: tuple[LabNode, ...]
    no_vm: bool
    boot_url: str
    memory_mb: int
    sim: SimOptions = field(default_factory=SimOptions)
    firmware: str = "bios"  # "uefi": OVMF and its own PXE, the inventory says uefi: true
    netns: str | None = None
    bridge: str | None = None
    bmc_protocol: str = "ipmi"  # or "redfish" (HTTPS, certificate from the lab CA)
    secure_boot: bool = False  # uefi: OVMF secboot with golden's keys enrolled; the inventory says secure_boot: true

    @property
    def shards(self) -> int:
        """How many virtual-BMC server processes the lab uses."""
        return max((n.shard for n in self.nodes), default=-1) + 1


@dataclass(frozen=True)
class NodeStatus:
    """One lab machine as it is now."""
    name: str
    mac: str
    rack: str
    bmc_port: int
    power: str
    bootdev: str
    pid: int | None = None
    serial_log: str | None = None
    overrides: tuple[str, ...] = ()  # boot overrides the BMC received, oldest first ("network once uefi")
    power_actions: tuple[str, ...] = ()  # power actions its BMC carried out, oldest first ("reset", "ForceRestart")


@dataclass(frozen=True)
class LabStatus:
    """A lab as it is now: up or not, its folder, inventory and nodes."""
    up: bool
    lab_dir: str
    inventory: str | None
    boot_url: str | None
    pids: tuple[int, ...]
    nodes: tuple[NodeStatus, ...]
    seconds: float = 0.0
    already_up: bool = False
    firmware: str = "bios"
    network: str = "user"  # "user" (slirp) or "bridge BR" / "bridge BR in netns NS"
    secure_boot: bool = False


def lab_dir(settings: Settings, lab: str = LAB_GROUP) -> Path:
    """The folder of lab ``lab`` in the home: ``lab`` is the one a person brings up; the nightly has its own."""
    if not LAB_NAME_RE.match(lab):
        raise InputError(f"lab name {lab!r}: expected lowercase letters, digits and '-'")
    return settings.home / lab


def default_boot_url(settings: Settings) -> str:
    """golden.yaml's ``lab: boot_url``, else DEFAULT_BOOT_URL."""
    lab_cfg = settings.extra.get("lab") or {}
    if isinstance(lab_cfg, dict) and lab_cfg.get("boot_url"):
        return str(lab_cfg["boot_url"])
    return DEFAULT_BOOT_URL


# ---------------------------------------------------------------------------------------------
# plan (pure)


def plan_lab(nodes: int, *, lab_id: str, base_port: int = DEFAULT_BASE_PORT, no_vm: bool = False,
             boot_url: str = DEFAULT_BOOT_URL, memory_mb: int = 1536, sim: SimOptions | None = None,
             prefix: str = LAB_GROUP, uefi: bool = False, netns: str | None = None,
             bridge: str | None = None, redfish: bool = False, secure_boot: bool = False) -> LabPlan:
    """``prefix`` names the nodes (``lab-n01``): two labs in one fleet state never share a host name."""
    if nodes < 1:
        raise InputError(f"--nodes must be at least 1, got {nodes}")
    if not no_vm and nodes > MAX_VMS:
        raise InputError(f"{nodes} QEMU machines will not fit on one host; use at most {MAX_VMS} or --no-vm")
    check_network(no_vm=no_vm, uefi=uefi, netns=netns, bridge=bridge, secure_boot=secure_boot)
    if base_port < 1024 or base_port + nodes > 65535:
        raise InputError(f"BMC ports {base_port}..{base_port + nodes - 1} are outside 1024..65535")
    if not boot_url.startswith(("http://", "https://")) or "," in boot_url:
        raise InputError(f"--boot-url must be an http(s) URL without commas, got {boot_url!r}")
    width = max(2, len(str(nodes)))
    seed = hashlib.sha256(lab_id.encode()).digest()
    planned = []
    for i in range(nodes):
        # locally administered unicast MACs, distinct per lab so two labs never collide
        mac = f"52:54:{seed[0]:02x}:{seed[1]:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
        planned.append(LabNode(name=f"{prefix}-n{i + 1:0{width}d}", mac=mac,
                               rack=f"{prefix}-rack{i // NODES_PER_RACK + 1}", bmc_port=base_port + i,
                               shard=i // MAX_BMCS_PER_PROCESS, tap=tap_name(lab_id, i) if bridge else None))
    return LabPlan(lab_id=lab_id, nodes=tuple(planned), no_vm=no_vm, boot_url=boot_url.rstrip("/"),
                   memory_mb=memory_mb, sim=sim or SimOptions(), firmware="uefi" if uefi else "bios",
                   netns=netns, bridge=bridge, bmc_protocol="redfish" if redfish else "ipmi", secure_boot=secure_boot)


def render_inventory(plan: LabPlan, password: str, address: str = "127.0.0.1", ca_file: Path | None = None) -> str:
    """The lab inventory: a real Ansible YAML inventory (group ``lab``, children = racks)."""
    racks: dict[str, dict[str, Any]] = {}
    tls = {"bmc_ca_file": str(ca_file)} if plan.bmc_protocol == "redfish" and ca_file else {}
    for n in plan.nodes:
        racks.setdefault(n.rack, {"hosts": {}})["hosts"][n.name] = {
            "mac": n.mac, "bmc_address": address, "bmc_port": n.bmc_port, "bmc_protocol": plan.bmc_protocol,
            "bmc_user": BMC_USER, "bmc_password": password, "uefi": plan.firmware == "uefi", **tls,
            **({"secure_boot": True} if plan.secure_boot else {}),
        }
    # golden_lab marks lab machines: a reimage that boots them all records a passed lab boot test
    doc = {"all": {"children": {LAB_GROUP: {"vars": {"golden_lab": True}, "children": racks}}}}
    header = f"# golden lab {plan.lab_id}: written by 'golden lab up'; removed by 'golden lab down'\n"
    return header + yaml.safe_dump(doc, sort_keys=False)


def render_chain_script(boot_url: str) -> str:
    """The iPXE script that chains a lab machine to the boot server."""
    return f"#!ipxe\nchain {boot_url}/boot/${{mac}}.ipxe || shell\n"


def _vm_config(plan: LabPlan, n: LabNode, node_dir: Path) -> dict[str, Any]:
    """VmSpec fields for node ``n`` (the BMC process builds the VmSpec)."""
    # console_socket: the lab BMC bridges the serial port to Serial-over-LAN; serial.log still gets it all
    vm: dict[str, Any] = {"name": n.name, "mac": n.mac, "serial_log": str(node_dir / "serial.log"),
                          "console_socket": True, "memory_mb": plan.memory_mb, "disk": str(node_dir / "disk.qcow2"),
                          "firmware": plan.firmware}
    if n.tap is None:
        vm.update(tftp_dir=str(node_dir / "tftp"), bootfile="boot.ipxe")
    else:
        vm.update(netdev=f"tap:{n.tap}", netns=plan.netns)
    if plan.firmware == "uefi":
        vm.update(uefi_vars=str(node_dir / "OVMF_VARS.fd"), secure_boot=plan.secure_boot)
    vm["hardware_dir"] = str(node_dir)  # hardware.json: memory, disks, serial, read at every power-on
    return vm


def network_label(plan: LabPlan) -> str:
    """How the lab's machines are networked, in words."""
    if plan.bridge is None:
        return "user"
    return f"bridge {plan.bridge}" + (f" in netns {plan.netns}" if plan.netns else "")


def _is_loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_files(plan: LabPlan, directory: Path) -> dict[str, str]:
    if plan.bmc_protocol != "redfish":
        return {}
    return {"tls_cert": str(directory / "tls" / "bmc.pem"), "tls_key": str(directory / "tls" / "bmc.key")}


def make_lab_tls(directory: Path, address: str = "127.0.0.1") -> Path:
    """The lab CA's certificate (``tls/ca.pem``) and a certificate it issued for ``address`` (``tls/bmc.pem``,
    key 0600), which every Redfish BMC of the lab presents; the CA's own key is not kept. The CA file."""
    tls = directory / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    ca = BmcCa.create(tls / "ca.pem", cn=f"golden lab BMC CA {secrets.token_hex(4)}")  # CN: 64 characters at most
    ca.issue(address, tls / "bmc.pem", tls / "bmc.key")
    return ca.pem


def serve_configs(plan: LabPlan, directory: Path, password: str) -> list[ServeConfig]:
    """The virtual-BMC server configuration of each shard."""
    configs = []
    for shard in range(plan.shards):
        bmcs = []
        for n in plan.nodes:
            if n.shard != shard:
                continue
            vm = None
            if not plan.no_vm:
                vm = _vm_config(plan, n, directory / "nodes" / n.name)
            bmcs.append(BmcConfig(name=n.name, port=n.bmc_port, user=BMC_USER, password=password, mac=n.mac, vm=vm,
                                  protocol=plan.bmc_protocol, **_tls_files(plan, directory)))
        # Simulated machines live in this host and reach the boot server at --boot-url directly; they
        # netboot only when that is a loopback address (a default 10.0.2.2 URL is QEMU's view).
        sim = replace(plan.sim, boot_url=plan.boot_url) if plan.no_vm and _is_loopback_url(plan.boot_url) \
            else plan.sim
        configs.append(ServeConfig(bmcs=bmcs, sim=sim, status_file=str(directory / f"status-{shard}.json"),
                                   pid_file=str(directory / f"vbmc-{shard}.pid")))
    return configs


# ---------------------------------------------------------------------------------------------
# act


def _write_private(path: Path, text: str) -> None:
    atomic_write(path, text, mode=0o600)


def _pid_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"toolkit.lab.vbmc" in cmdline


def _read_pids(directory: Path) -> list[int]:
    pids = []
    for f in sorted(directory.glob("vbmc-*.pid")):
        try:
            pids.append(int(f.read_text().strip()))
        except (OSError, ValueError):
            continue
    return pids


def _ports_free(first: int, count: int) -> bool:
    for port in range(first, first + count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def _pick_base_port(count: int, start: int) -> int:
    port = start
    while port + count < 65000:
        if _ports_free(port, count):
            return port
        port += count + 7
    raise LabError(f"no {count} consecutive free UDP ports on 127.0.0.1 from {start}")


def _load_plan(directory: Path) -> tuple[LabPlan, str] | None:
    path = directory / "lab.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    plan = LabPlan(lab_id=data["lab_id"], nodes=tuple(LabNode(**n) for n in data["nodes"]), no_vm=data["no_vm"],
                   boot_url=data["boot_url"], memory_mb=data["memory_mb"], sim=SimOptions(**data["sim"]),
                   firmware=data.get("firmware", "bios"), netns=data.get("netns"), bridge=data.get("bridge"),
                   bmc_protocol=data.get("bmc_protocol", "ipmi"), secure_boot=data.get("secure_boot", False))
    return plan, data["password"]


def status_lab(settings: Settings, lab: str = LAB_GROUP) -> LabStatus:
    """The lab as it is now."""
    directory = lab_dir(settings, lab)
    loaded = _load_plan(directory)
    if loaded is None:
        return LabStatus(up=False, lab_dir=str(directory), inventory=None, boot_url=None, pids=(), nodes=())
    plan, _ = loaded
    pids = tuple(p for p in _read_pids(directory) if _pid_alive(p))
    live: dict[str, dict[str, Any]] = {}
    for f in directory.glob("status-*.json"):
        try:
            live.update(json.loads(f.read_text())["nodes"])
        except (OSError, ValueError, KeyError):
            continue
    up = len(pids) == plan.shards
    nodes = tuple(
        NodeStatus(name=n.name, mac=n.mac, rack=n.rack, bmc_port=n.bmc_port,
                   power=live.get(n.name, {}).get("power", "?") if up else "down",
                   bootdev=live.get(n.name, {}).get("bootdev", "?") if up else "-",
                   pid=live.get(n.name, {}).get("pid") if up else None,
                   serial_log=None if plan.no_vm else str(directory / "nodes" / n.name / "serial.log"),
                   overrides=tuple(live.get(n.name, {}).get("overrides", ())) if up else (),
                   power_actions=tuple(live.get(n.name, {}).get("power_actions", ())) if up else ())
        for n in plan.nodes
    )
    return LabStatus(up=up, lab_dir=str(directory), inventory=str(directory / "inventory.yaml"),
                     boot_url=plan.boot_url, pids=pids, nodes=nodes, firmware=plan.firmware,
                     network=network_label(plan), secure_boot=plan.secure_boot)


def check_bridge(netns: str | None, bridge: str) -> None:
    """The namespace and the bridge in it exist (read with ``ip``; nothing is changed)."""
    require("ip", "iproute2")
    if netns is not None and not Path("/run/netns", netns).exists():
        raise InputError(f"--netns {netns}: no such network namespace",
                         hint="create it (ip netns add) or see: ip netns list")
    where = ["-n", netns] if netns else []
    res = run(["ip", *where, "-d", "-j", "link", "show", "dev", bridge], capture=True, check=False)
    links = json.loads(res.stdout or "[]") if res.returncode == 0 else []
    inside = f" in network namespace {netns}" if netns else ""
    if res.returncode != 0 and os.geteuid() != 0:
        raise LabError(f"--bridge {bridge}: cannot read the interface{inside}: {res.stderr.strip()[:200]}",
                       hint="a lab on a bridge adds taps (and enters --netns): run it as root")
    if not links:
        raise InputError(f"--bridge {bridge}: no such interface{inside}", hint="see: ip link show type bridge")
    if links[0].get("linkinfo", {}).get("info_kind") != "bridge":
        raise InputError(f"--bridge {bridge}: the interface{inside} is not a bridge",
                         hint="see: ip link show type bridge")


def _ip(plan: LabPlan, *args: str, check: bool = True) -> None:
    run(["ip", *(["-n", plan.netns] if plan.netns else []), *args], capture=True, check=check)


def _add_taps(plan: LabPlan) -> None:
    for n in plan.nodes:
        if n.tap:
            _ip(plan, "tuntap", "add", "dev", n.tap, "mode", "tap")
            _ip(plan, "link", "set", n.tap, "master", str(plan.bridge), "up")


def _remove_taps(plan: LabPlan) -> None:
    # A namespace deleted before the lab took its taps with it: nothing left to remove is fine.
    if plan.netns and not Path("/run/netns", plan.netns).exists():
        return
    for n in plan.nodes:
        if n.tap:
            _ip(plan, "link", "del", n.tap, check=False)


def up_lab(settings: Settings, nodes: int, *, no_vm: bool = False, boot_url: str | None = None,
           base_port: int | None = None, memory_mb: int = 1536, sim: SimOptions | None = None,
           on_step: Callable[[str], None] = lambda step: None, lab: str = LAB_GROUP,
           network: LabNetwork | None = None, disks: int = 1, redfish: bool = False) -> LabStatus:
    """Start the lab, or report the running one when it is already up with the same size."""
    started = time.monotonic()
    if not 1 <= disks <= MAX_DISKS:
        raise InputError(f"--disks must be between 1 and {MAX_DISKS}, got {disks}")
    network = network or LabNetwork()
    check_network(no_vm=no_vm, **asdict(network))
    directory = lab_dir(settings, lab)
    current = status_lab(settings, lab)
    if current.up:
        loaded = _load_plan(directory)
        same = loaded is not None and (loaded[0].no_vm, loaded[0].firmware == "uefi", loaded[0].netns,
                                       loaded[0].bridge, loaded[0].bmc_protocol, loaded[0].secure_boot) == (
            no_vm, network.uefi, network.netns, network.bridge, "redfish" if redfish else "ipmi", network.secure_boot)
        if len(current.nodes) != nodes or not same:
            raise LabError(f"a lab with {len(current.nodes)} nodes ({current.firmware}, {current.network}) "
                           f"is already up in {directory}",
                           hint="run 'golden lab down' first to change its size or mode")
        return LabStatus(**{**asdict(current), "nodes": current.nodes, "pids": current.pids, "already_up": True})
    if directory.exists():
        down_lab(settings, lab)  # leftovers of a lab whose processes died: start clean
    if network.bridge is not None:  # bad input (exit 2) before missing tools (exit 1)
        check_bridge(network.netns, network.bridge)
    if not no_vm:
        require("qemu-system-x86_64", "qemu-system-x86")
        require("qemu-img", "qemu-utils")
    if network.uefi and not (OVMF_CODE.exists() and OVMF_VARS.exists()):
        raise ToolMissingError(f"{OVMF_CODE} not found.", hint="install it: apt-get install ovmf")
    keys = _secure_boot_keys(settings) if network.secure_boot else None
    # Another lab starting at the same moment (parallel tests, two operators) can probe the same
    # free ports before either binds them: a port we chose ourselves that is taken by the time the
    # BMC binds it is chosen again, from a random place so two racers part ways.
    attempts = 1 if base_port is not None else PORT_ATTEMPTS
    for attempt in range(attempts):
        start = DEFAULT_BASE_PORT if attempt == 0 else DEFAULT_BASE_PORT + random.randrange(0, 20000)
        port = base_port if base_port is not None else _pick_base_port(nodes, start)
        try:
            return _start_lab(settings, directory, nodes, port, no_vm=no_vm, boot_url=boot_url,
                              memory_mb=memory_mb, sim=sim, on_step=on_step, started=started, lab=lab,
                              network=network, disks=disks, redfish=redfish, keys=keys)
        except _PortTaken as exc:
            if attempt + 1 == attempts:
                raise LabError(str(exc), hint=exc.hint) from None
            on_step(f"UDP port {port} was taken meanwhile; choosing other ports")
    raise AssertionError("unreachable")


def _secure_boot_keys(settings: Settings) -> secureboot.Hierarchy:
    if not OVMF_CODE_SECBOOT.exists():
        raise ToolMissingError(f"{OVMF_CODE_SECBOOT} not found.", hint="install it: apt-get install ovmf")
    keys = secureboot.hierarchy(settings)
    if keys is None:
        raise InputError("--secure-boot enrols golden's Secure Boot keys, and this home has none",
                         hint="run golden keys init first (then bake: the build gets a signed UKI)")
    return keys


class _PortTaken(LabError):
    """A BMC could not bind its port: someone bound it between our probe and the BMC's bind."""


def _start_lab(settings: Settings, directory: Path, nodes: int, port: int, *, no_vm: bool, boot_url: str | None,
               memory_mb: int, sim: SimOptions | None, on_step: Callable[[str], None], started: float,
               lab: str = LAB_GROUP, network: LabNetwork, disks: int = 1, redfish: bool = False,
               keys: secureboot.Hierarchy | None = None) -> LabStatus:
    lab_id = secrets.token_hex(4)
    plan = plan_lab(nodes, lab_id=lab_id, base_port=port, no_vm=no_vm,
                    boot_url=boot_url or default_boot_url(settings), memory_mb=memory_mb, sim=sim, prefix=lab,
                    redfish=redfish, **asdict(network))
    password = secrets.token_urlsafe(15)  # 20 characters: the IPMI 2.0 maximum (ipmitool truncates)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    procs = []
    try:
        _write_private(directory / "lab.json", json.dumps(
            {**asdict(plan), "nodes": [asdict(n) for n in plan.nodes], "password": password}, indent=1))
        if not no_vm:
            on_step(f"creating {len(plan.nodes)} machine disk(s)")
            for n in plan.nodes:
                node_dir = directory / "nodes" / n.name
                node_dir.mkdir(parents=True, exist_ok=True)
                if n.tap is None:  # slirp's TFTP; on a bridge the network's own DHCP says what to boot
                    (node_dir / "tftp").mkdir(exist_ok=True)
                    (node_dir / "tftp" / "boot.ipxe").write_text(render_chain_script(plan.boot_url))
                hw = default_hardware(n.name, lab_id, plan.nodes.index(n), memory_mb, disks)
                save_hardware(node_dir, hw)
                for d in hw.disks:
                    run(["qemu-img", "create", "-q", "-f", "qcow2", node_dir / d.file, f"{d.size_gib}G"], capture=True)
                if keys is not None:  # golden's PK, KEK and db enrolled, Secure Boot on
                    secureboot.enrol(keys, OVMF_VARS, node_dir / "OVMF_VARS.fd")
                elif plan.firmware == "uefi":  # the machine's own boot entries, as NVRAM on a server
                    shutil.copyfile(OVMF_VARS, node_dir / "OVMF_VARS.fd")
        ca_file = None
        if plan.bmc_protocol == "redfish":
            on_step("making the lab CA and the BMCs' certificate")
            ca_file = make_lab_tls(directory)
        if plan.bridge is not None:
            on_step(f"adding {len(plan.nodes)} tap(s) to {network_label(plan)}")
            _add_taps(plan)
        on_step(f"starting {plan.shards} virtual BMC process(es) for {len(plan.nodes)} machine(s)")
        for shard, cfg in enumerate(serve_configs(plan, directory, password)):
            cfg_path = directory / f"vbmc-{shard}.json"
            _write_private(cfg_path, json.dumps(cfg.dump()))
            with open(directory / f"vbmc-{shard}.log", "ab") as logf:
                procs.append(spawn([sys.executable, "-m", "toolkit.lab.vbmc", cfg_path], stdout=logf,
                                   env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent.parent)}))
        on_step("waiting for the BMCs to listen")
        deadline = time.monotonic() + START_TIMEOUT
        for shard, proc in enumerate(procs):
            # the status file appears after every socket is bound and the loop runs
            ready_file = directory / f"status-{shard}.json"
            while not ready_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (directory / f"vbmc-{shard}.log").read_text(errors="replace")[-2000:]
                    error = _PortTaken if "Errno 98" in tail else LabError
                    raise error(f"virtual BMC process {shard} did not start (see {directory}/vbmc-{shard}.log)",
                                   hint=tail.strip().splitlines()[-1] if tail.strip() else None)
                time.sleep(0.05)
        on_step("writing the lab inventory")
        _write_private(directory / "inventory.yaml", render_inventory(plan, password, ca_file=ca_file))
    except BaseException:
        down_lab(settings, lab)
        raise
    status = status_lab(settings, lab)
    return LabStatus(**{**asdict(status), "nodes": status.nodes, "pids": status.pids,
                        "seconds": round(time.monotonic() - started, 3)})


def down_lab(settings: Settings, lab: str = LAB_GROUP) -> LabStatus:
    """Stop every BMC process (which stops its QEMU machines) and remove the lab folder."""
    started = time.monotonic()
    directory = lab_dir(settings, lab)
    before = status_lab(settings, lab)
    loaded = _load_plan(directory)
    pids = [p for p in _read_pids(directory) if _pid_alive(p)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    # QEMU machines run in their own process groups; the BMC process stops them, but a
    # SIGKILLed BMC process cannot, so finish the job from its last status.
    for node in before.nodes:
        if node.pid and Path(f"/proc/{node.pid}").exists():
            try:
                if b"qemu" in Path(f"/proc/{node.pid}/cmdline").read_bytes():
                    os.killpg(node.pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
    if loaded is not None:
        _remove_taps(loaded[0])
    if directory.exists():
        shutil.rmtree(directory)
    return LabStatus(up=False, lab_dir=str(directory), inventory=None, boot_url=None, pids=(), nodes=before.nodes,
                     seconds=round(time.monotonic() - started, 3))


def console_text(settings: Settings, node: str, lines: int = 200, lab: str = LAB_GROUP) -> str:
    """The last ``lines`` of a lab machine's serial console."""
    status = status_lab(settings, lab)
    match = [n for n in status.nodes if n.name == node]
    if not match:
        names = ", ".join(n.name for n in status.nodes) or "(no lab is up)"
        raise InputError(f"no lab node named {node!r}", hint=f"lab nodes: {names}")
    if match[0].serial_log is None:
        raise InputError(f"{node} is simulated (--no-vm) and has no serial console")
    path = Path(match[0].serial_log)
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").replace("\x1b", "")
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else text

