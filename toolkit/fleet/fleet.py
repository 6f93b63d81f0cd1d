"""Fleet state: which build each host should run (desired), was handed (served), and reports running (observed).

Hosts come from the inventory (Ansible YAML; groups are racks). A host's desired build is, in
order: the build a rollout recorded for it in the state DB (``set_desired``), else its inventory
``image`` var resolved now (``name@channel`` follows the channel, ``name@build-id`` pins).
The inventory file is re-read when it changes, so reassigning a host takes effect on its next boot.

Reports are verified here (token bound to MAC and build, single use) and either change exactly
the host's observed state or nothing at all.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from toolkit.boot.token import TokenError, verify_token
from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.core.mac import MacError, normalize_mac
from toolkit.inventory.hosts import Host, Inventory, load_inventory, resolve_inventory_path
from toolkit.state.db import HostRow, ObservedReport, Repo, StateDB, UnknownMachineRow
from toolkit.store.artifacts import Build, Store

log = logging.getLogger("golden.fleet")

MAX_DRIFT_PATHS = 10_000


class ReportRejected(Exception):
    """A report was not accepted; ``reason`` goes to the log and the boot events, never to state."""

    def __init__(self, reason: str, mac: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mac = mac


@dataclass(frozen=True)
class ImageRef:
    image: str
    ref: str  # a channel name or a build id


@dataclass(frozen=True)
class DesiredBuild:
    image: str
    build_id: str
    source: str  # "channel dev", "pinned", "rollout"


@dataclass(frozen=True)
class BootDecision:
    mac: str
    host: str | None  # None: not in the inventory
    build: Build | None  # None: nothing to boot (unknown machine, empty channel, build gone)
    desired: DesiredBuild | None
    problem: str = ""


@dataclass(frozen=True)
class HostStatus:
    name: str
    rack: str
    mac: str
    image: str
    desired: str | None
    desired_source: str
    served: str | None
    observed: str | None
    observed_since: float | None
    booted_at: str | None
    last_report: float | None
    drift: tuple[str, ...]
    state: str  # in-sync | pending | drifted | never-reported | no-build


def parse_image_ref(value: str | None, host: str = "?") -> ImageRef | None:
    if not value:
        return None
    image, sep, ref = value.partition("@")
    if not sep or not image or not ref:
        raise InputError(f"host {host}: image must look like <name>@<channel> or <name>@<build-id>, got {value!r}")
    return ImageRef(image, ref)


def rack_of(host: Host) -> str:
    """The host's rack: its group named like a rack, else its first group (groups are racks)."""
    groups = [g for g in host.groups if g not in ("all", "ungrouped")]
    racks = [g for g in groups if "rack" in g]
    return (racks or groups or [""])[0]


def resolve_desired(ref: ImageRef | None, channel_build: str | None, pinned_exists: bool,
                    override: tuple[str, str] | None) -> DesiredBuild | None:
    """Pure: the desired build from a rollout override, a channel's current build, or a pinned build id."""
    if override is not None:
        return DesiredBuild(override[0], override[1], "rollout")
    if ref is None:
        return None
    if channel_build is not None:
        return DesiredBuild(ref.image, channel_build, f"channel {ref.ref}")
    if pinned_exists:
        return DesiredBuild(ref.image, ref.ref, "pinned")
    return None


def host_state(desired: str | None, observed: str | None, last_report: float | None, drift: tuple[str, ...]) -> str:
    if desired is None:
        return "no-build"
    if last_report is None:
        return "never-reported"
    if observed != desired:
        return "pending"
    return "drifted" if drift else "in-sync"


class Fleet:
    """The inventory plus the state DB and the store, as the boot server and the CLI see them."""

    def __init__(self, db: StateDB, store: Store, inventory_path: Path | None) -> None:
        self.db = db
        self.store = store
        self.inventory_path = inventory_path
        self._lock = threading.Lock()
        self._inv: Inventory | None = None
        self._inv_stamp: tuple[int, int] | None = None
        self._by_mac: dict[str, Host] = {}

    # ---- inventory ----
    def hosts(self) -> list[Host]:
        self._refresh()
        return sorted(self._by_mac.values(), key=lambda h: h.name)

    def host_by_mac(self, mac: str) -> Host | None:
        self._refresh()
        return self._by_mac.get(mac)

    def host_by_name(self, name: str) -> Host | None:
        return next((h for h in self.hosts() if h.name == name), None)

    def _refresh(self) -> None:
        if self.inventory_path is None:
            return
        try:
            st = self.inventory_path.stat()
        except FileNotFoundError:
            raise InputError(f"inventory {self.inventory_path} does not exist") from None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp == self._inv_stamp:
                return
            inv = load_inventory(self.inventory_path)
            by_mac: dict[str, Host] = {}
            for h in inv.hosts:
                if not h.mac:
                    continue
                mac = normalize_mac(h.mac)
                if mac in by_mac:
                    raise InputError(f"{self.inventory_path}: hosts {by_mac[mac].name} and {h.name} share MAC {mac}")
                by_mac[mac] = h
            self._inv, self._by_mac, self._inv_stamp = inv, by_mac, stamp

    # ---- desired state ----
    def _desired(self, repo: Repo, host: Host, row: HostRow | None) -> DesiredBuild | None:
        ref = parse_image_ref(host.image, host.name)
        override = (row.desired_image, row.desired_build) if row and row.desired_image and row.desired_build else None
        channel_row = repo.get_channel(ref.image, ref.ref) if ref else None
        pinned = bool(ref and channel_row is None and self.store.find(ref.image, ref.ref) is not None)
        return resolve_desired(ref, channel_row.build_id if channel_row else None, pinned, override)

    def desired_for(self, host: Host) -> DesiredBuild | None:
        with self.db.read() as repo:
            return self._desired(repo, host, repo.get_host(host.name))

    def set_desired(self, name: str, image: str, build_id: str) -> None:
        """Pin a host to a build (what a rollout does before it reboots the host)."""
        host = self.host_by_name(name)
        if host is None or not host.mac:
            raise InputError(f"host {name!r} is not in the inventory {self.inventory_path} with a mac")
        mac = normalize_mac(host.mac)
        with self.db.write() as repo:
            repo.ensure_host(host.name, mac)
            repo.set_desired(host.name, image, build_id, time.time())
            repo.add_event("desired", time.time(), mac, host.name, build_id, image)

    def clear_desired(self, name: str) -> None:
        """Let the host follow its inventory image again."""
        with self.db.write() as repo:
            repo.set_desired(name, None, None, time.time())

    # ---- boot ----
    def decide_boot(self, mac: str, remote_addr: str | None = None) -> BootDecision:
        """What ``mac`` boots now; records the serving (or the unknown machine) in the state DB."""
        mac = normalize_mac(mac)
        host = self.host_by_mac(mac)
        now = time.time()
        with self.db.write() as repo:
            if host is None:
                repo.record_unknown(mac, now, remote_addr)
                repo.add_event("unknown", now, mac, None, None, remote_addr or "")
                return BootDecision(mac, None, None, None, "not in the inventory")
            repo.ensure_host(host.name, mac)
            desired = self._desired(repo, host, repo.get_host(host.name))
            if desired is None:
                problem = f"no build to boot: image {host.image or '(none)'} resolves to nothing"
                repo.add_event("no-build", now, mac, host.name, None, problem)
                return BootDecision(mac, host.name, None, None, problem)
            build = self.store.find(desired.image, desired.build_id)
            if build is None:
                problem = f"desired build {desired.image}/{desired.build_id} is not in the store"
                repo.add_event("no-build", now, mac, host.name, desired.build_id, problem)
                return BootDecision(mac, host.name, None, desired, problem)
            repo.set_served(host.name, build.build_id, now)
            repo.add_event("served", now, mac, host.name, build.build_id, desired.source)
            return BootDecision(mac, host.name, build, desired)

    # ---- reports ----
    def accept_report(self, payload: Any, secret: bytes) -> HostStatus:
        """Verify and record an agent report; ReportRejected (state untouched) when it is not acceptable."""
        try:
            report, mac, token = parse_report(payload)
        except ReportRejected as exc:
            self.reject(exc)
            raise
        try:
            nonce = verify_token(secret, token, mac, report.build_id)
        except TokenError as exc:
            forged = ReportRejected(str(exc), mac)
            self.reject(forged)
            raise forged from None
        host = self.host_by_mac(mac)
        if host is None:
            stranger = ReportRejected("MAC not in the inventory", mac)
            self.reject(stranger)
            raise stranger
        now = time.time()
        with self.db.write() as repo:
            replay = not repo.use_nonce(nonce, mac, now)
            if not replay:
                repo.ensure_host(host.name, mac)
                repo.set_observed(host.name, report, now)
                repo.add_event("report", now, mac, host.name, report.build_id,
                               json.dumps({"drift": len(report.drift), "hostname": report.hostname,
                                           "checks": report.checks}))
        if replay:
            replayed = ReportRejected("token already used (replayed report)", mac)
            self.reject(replayed)
            raise replayed
        return self.status_of(host)

    def reject(self, rej: ReportRejected) -> None:
        """Log a rejected report and append it to the boot events; nothing else changes."""
        log.warning("golden: rejected a report from %s: %s", rej.mac or "?", rej.reason)
        with self.db.write() as repo:
            repo.add_event("reject", time.time(), rej.mac, None, None, rej.reason)

    # ---- status ----
    def status_of(self, host: Host) -> HostStatus:
        with self.db.read() as repo:
            return self._status(repo, host)

    def _status(self, repo: Repo, host: Host) -> HostStatus:
        row = repo.get_host(host.name)
        try:
            desired = self._desired(repo, host, row)
        except InputError:
            desired = None
        observed = row.observed_build if row else None
        last = row.last_report_at if row else None
        drift = row.drift if row else ()
        return HostStatus(
            name=host.name, rack=rack_of(host), mac=normalize_mac(host.mac) if host.mac else "",
            # the inventory's image ref; without one, the image a rollout set for the host
            image=host.image or (desired.image if desired else ""), desired=desired.build_id if desired else None,
            desired_source=desired.source if desired else "", served=row.served_build if row else None,
            observed=observed, observed_since=row.observed_since if row else None,
            booted_at=row.booted_at if row else None, last_report=last, drift=drift,
            state=host_state(desired.build_id if desired else None, observed, last, drift),
        )

    def status(self, pattern: str = "all") -> list[HostStatus]:
        self._refresh()
        if self._inv is None:
            return []
        hosts = list(self._inv.hosts) if pattern == "all" else self._inv.select(pattern)
        with self.db.read() as repo:
            return [self._status(repo, h) for h in sorted(hosts, key=lambda h: h.name)]

    def inventory_refs(self) -> dict[tuple[str, str], list[str]]:
        """Builds the inventory pins hosts to (``name@build-id``), so retention keeps them."""
        refs: dict[tuple[str, str], list[str]] = {}
        with self.db.read() as repo:
            for h in self.hosts():
                try:
                    ref = parse_image_ref(h.image, h.name)
                except InputError:
                    continue
                if ref and repo.get_channel(ref.image, ref.ref) is None:
                    refs.setdefault((ref.image, ref.ref), []).append(f"pinned by {h.name} in the inventory")
        return refs

    def unknown_machines(self) -> list[UnknownMachineRow]:
        with self.db.read() as repo:
            return repo.list_unknown()


def parse_report(payload: Any) -> tuple[ObservedReport, str, str]:
    """Validate the agent's JSON (contract 3); returns (report, normalized MAC, token)."""
    if not isinstance(payload, dict):
        raise ReportRejected("malformed report: expected a JSON object")
    raw_mac = payload.get("mac")
    mac = None
    if isinstance(raw_mac, str):
        try:
            mac = normalize_mac(raw_mac)
        except MacError:
            mac = None
    if mac is None:
        raise ReportRejected("malformed report: mac is missing or not a MAC address")
    problems = [k for k in ("build_id", "image", "token", "hostname", "booted_at", "agent_version")
                if not isinstance(payload.get(k), str) or (not payload.get(k) and k != "agent_version")]
    uptime = payload.get("uptime_s")
    if not isinstance(uptime, int | float) or isinstance(uptime, bool) or uptime < 0:
        problems.append("uptime_s")
    drift = payload.get("drift")
    if not isinstance(drift, list) or len(drift) > MAX_DRIFT_PATHS or not all(isinstance(p, str) for p in drift):
        problems.append("drift")
    checks = payload.get("checks", {})
    if not isinstance(checks, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("passed"), bool)
            for k, v in checks.items()):
        problems.append("checks")
    if not problems:
        try:
            datetime.fromisoformat(payload["booted_at"].replace("Z", "+00:00"))
        except ValueError:
            problems.append("booted_at")
    if problems:
        raise ReportRejected(f"malformed report: bad or missing {', '.join(problems)}", mac)
    report = ObservedReport(
        image=payload["image"], build_id=payload["build_id"], booted_at=payload["booted_at"],
        hostname=payload["hostname"][:255], uptime_s=float(uptime), drift=tuple(drift),  # type: ignore[arg-type]
        agent_version=payload["agent_version"][:64],
        checks={k: {"passed": v["passed"], "detail": str(v.get("detail", ""))[:500]} for k, v in checks.items()},
    )
    return report, mac, payload["token"]


def open_fleet(settings: Settings, inventory: str | None = None, *, required: bool = True) -> Fleet:
    """The fleet of the inventory found like Ansible finds it (-i, GOLDEN_INVENTORY, golden.yaml)."""
    path: Path | None
    try:
        path = resolve_inventory_path(inventory, settings)
    except InputError:
        if required or inventory is not None:
            raise
        path = None
    return Fleet(StateDB(settings.state_db), Store(settings.store_dir), path)
