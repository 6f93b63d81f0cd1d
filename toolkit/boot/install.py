"""The install plan a disk host's netbooted node fetches: ``GET /install/<mac>.json?token=...&disks=...``.

Within a live reimage attempt a disk host's boot script carries ``golden.install=<url>`` (``install_args``);
the node's ``golden-install-boot`` (roles/installer) asks that URL with its boot token and its disks
(``vda:21474836480,...``), then runs ``golden-install`` with the answer: the ``InstallPlan``
(``toolkit.install.plan``) that writes the build to the host's inactive slot (``host_slots``), laid out by
the host's disk settings.

The plan goes only to a token of the host's live, uncontested attempt, from the address its script went to
(``evidence.live_attempt_token``, the check a boot refusal passes too). The token is not spent: the installed
slot's agent reports with it (the entry's command line carries it). Anything else is a counted reject: 403,
or 400 when the request itself is malformed (a bad MAC, bad disks). A disk the settings do not fit is 409
with the reason: the inventory needs fixing, not the node. Handing out a plan records the install as being
tried (``slots.installed``: a report from the other slot is then a fall-back) and a boot event.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolkit.boot import netboot, pxe
from toolkit.boot.decide import BootDecision, decide_build
from toolkit.boot.evidence import IssuedToken, live_attempt_token, reject
from toolkit.boot.metrics import Metrics
from toolkit.boot.reports import RejectKind, ReportRejected
from toolkit.boot.token import TokenError, verify_token
from toolkit.core.errors import InputError
from toolkit.core.mac import is_mac, normalize_mac
from toolkit.fleet.slots import row_of, state_of
from toolkit.install.layout import Disk, plan_layout
from toolkit.install.plan import InstallPlan, plan_install
from toolkit.install.settings import DiskSettings
from toolkit.install.slots import SlotState, installed
from toolkit.state.db import Repo, StateError
from toolkit.store.artifacts import Build

if TYPE_CHECKING:
    from toolkit.boot.server import ServerConfig

INSTALL_RE = re.compile(r"^/install/([^/]{1,64})\.json$")
INSTALL_EVENT = "install-plan"
MAX_DISKS = 64
_DISK = re.compile(r"^([a-z][a-z0-9]{0,31}):([0-9]{1,20})$")


@dataclass(frozen=True)
class InstallAnswer:
    """What ``/install`` answers: the status and the JSON body."""
    code: int
    body: bytes


@dataclass(frozen=True)
class PlanRequest:
    """A node's request for its install plan."""
    mac: str
    token: str
    disks: tuple[Disk, ...]  # empty: the disks of the host's last hardware facts


def install_url(base_url: str, mac: str) -> str:
    """Where the node with ``mac`` fetches its install plan (it adds its token and disks as the query)."""
    return f"{base_url.rstrip('/')}/install/{normalize_mac(mac)}.json"


def install_args(decision: BootDecision, issued: IssuedToken, base_url: str) -> tuple[str, ...]:
    """``golden.install=<url>`` for a disk host booting within a live, uncontested attempt; nothing else installs."""
    if not decision.disk or not issued.attempt or issued.contested:
        return ()
    return (f"golden.install={install_url(base_url, decision.mac)}",)


def parse_disks(text: str) -> tuple[Disk, ...]:
    """``vda:21474836480,vdb:...`` (name and bytes, as /sys/block says) as disks; ValueError otherwise."""
    items = [t for t in text.split(",") if t]
    if len(items) > MAX_DISKS:
        raise ValueError(f"more than {MAX_DISKS} disks")
    disks = []
    for item in items:
        m = _DISK.match(item)
        if m is None:
            raise ValueError(f"disk {ascii(item)[:40]} is not NAME:BYTES")
        disks.append(Disk(m.group(1), int(m.group(2))))
    return tuple(disks)


def parse_request(raw_mac: str, query: Mapping[str, str]) -> PlanRequest:
    """The request's MAC, token and disks; ReportRejected(MALFORMED) when one is unusable."""
    if not is_mac(raw_mac):
        raise ReportRejected(f"malformed install request: {ascii(raw_mac)[:40]} is not a MAC address",
                             RejectKind.MALFORMED)
    mac = normalize_mac(raw_mac)
    try:
        disks = parse_disks(query.get("disks", ""))
    except ValueError as exc:
        raise ReportRejected(f"malformed install request: {exc}", RejectKind.MALFORMED, mac) from None
    return PlanRequest(mac, query.get("token", ""), disks)


def known_disks(facts: Mapping[str, Any] | None) -> tuple[Disk, ...]:
    """The disks a host's stored hardware facts list (a first install may have none yet)."""
    found = (facts or {}).get("disks", [])
    return tuple(Disk(d["name"], d["size_bytes"]) for d in found if d.get("name") and d.get("size_bytes"))


def slot_options(build: Build, mac: str, token: str, base_url: str, extra_args: Sequence[str]) -> str:
    """The installed slot's kernel command line after ``golden.slot=``: the netboot's golden words (build, hash,
    the attempt's token, where to report) without live-boot's download, and never ``golden.install=``."""
    words = netboot.kernel_cmdline(pxe.artifact_url(base_url, build, "rootfs.squashfs"),
                                   build.manifest.artifacts["rootfs.squashfs"].sha256, build.build_id, build.image,
                                   mac, token, f"{base_url.rstrip('/')}/report", extra_args)
    return " ".join(w for w in words if not w.startswith(("boot=", "fetch=", "golden.install=")))


@dataclass(frozen=True)
class _Target:
    """Whom a plan is for: the host, the build it boots, its disk settings, the token's nonce."""
    host: str
    build: Build
    settings: DiskSettings
    nonce: str


def _target(config: ServerConfig, req: PlanRequest) -> _Target:
    """The host and the build it boots, when the token is that boot's; else ReportRejected."""
    decision = decide_build(config.fleet, req.mac)
    host = config.fleet.host_by_mac(req.mac)
    if host is None or decision.host is None:
        raise ReportRejected("MAC not in the inventory", RejectKind.UNKNOWN_HOST, req.mac)
    if not decision.disk or host.disk is None:
        raise ReportRejected(f"{host.name} runs in RAM (install: ram): no install plan", RejectKind.NOT_DISK, req.mac)
    if decision.build is None:
        raise ReportRejected(f"no build to install: {decision.problem}", RejectKind.ENDED, req.mac)
    try:
        claims = verify_token(config.secret, req.token, req.mac, decision.build.build_id, ttl=config.token_ttl_s,
                     image=decision.build.image)
    except TokenError as exc:
        raise ReportRejected(exc.message, RejectKind(exc.kind), req.mac) from None
    return _Target(host.name, decision.build, host.disk, claims.nonce)


def _plan_in(repo: Repo, config: ServerConfig, req: PlanRequest, t: _Target, addr: str,
             base_url: str) -> InstallPlan:
    """Inside one transaction: check the token's attempt, plan the inactive slot, record the install tried."""
    host, build, settings = t.host, t.build, t.settings
    row = live_attempt_token(repo, t.nonce, host, addr, "an install plan")
    stored = repo.get_slots(host)
    state = state_of(stored) if stored is not None else SlotState()
    hardware = repo.latest_hardware(host)
    layout = plan_layout(req.disks or known_disks(hardware.facts if hardware else None), settings)
    now = time.time()
    plan = plan_install(layout, state.inactive, build.build_id, build.manifest.artifacts["rootfs.squashfs"].sha256,
                        settings.boot_tries, int(now),
                        slot_options(build, req.mac, req.token, base_url, config.extra_args))
    repo.set_slots(row_of(host, installed(state, build.build_id), now))
    repo.add_event(INSTALL_EVENT, now, req.mac, host, build.build_id,
                   json.dumps({"attempt": row.attempt, "slot": plan.slot, "device": plan.device}))
    return plan


def _refused(rej: ReportRejected) -> InstallAnswer:
    code = 400 if rej.kind == RejectKind.MALFORMED else 403
    body = json.dumps({"accepted": False, "reason": rej.reason, "kind": rej.kind.value}).encode()
    return InstallAnswer(code, body)


def answer_install(config: ServerConfig, metrics: Metrics, raw_mac: str, query: Mapping[str, str], addr: str,
                   base_url: str) -> InstallAnswer:
    """The answer to ``GET /install/<raw_mac>.json``: 200 and the plan, or why not (a refusal is counted in
    ``metrics`` and the state database, like a refused report's)."""
    mac = None
    try:
        req = parse_request(raw_mac, query)
        mac = req.mac
        target = _target(config, req)
        with config.fleet.db.write_rows() as repo:
            plan = _plan_in(repo, config, req, target, addr, base_url)
    except ReportRejected as rej:
        rej.mac = rej.mac or mac
        reject(config.fleet, rej, addr)
        metrics.add("rejects", rej.kind.value)
        return _refused(rej)
    except InputError as exc:  # the layout does not fit the machine: the operator's to fix
        return InstallAnswer(409, json.dumps({"accepted": False, "reason": exc.message, "hint": exc.hint}).encode())
    except StateError as exc:
        return InstallAnswer(503, json.dumps({"accepted": False, "reason": exc.message}).encode())
    return InstallAnswer(200, plan.to_json().encode())
