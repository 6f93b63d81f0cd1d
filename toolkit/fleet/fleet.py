"""The fleet: the inventory, the state DB and the store, as the boot server, the rollout and the CLI see them.

It owns the inventory view (hosts by MAC, re-read when the file changes), desired state (a
rollout's override, else the inventory's image resolved now), the attempts a reimage arms on a
host, and the per-host status. Boot decisions and report checking live in ``toolkit.boot``;
the pure parts live in ``desired`` and ``status``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from toolkit.core.config import Settings, StaleConfig
from toolkit.core.errors import InputError
from toolkit.core.mac import normalize_mac
from toolkit.fleet.desired import DesiredBuild, resolve_desired
from toolkit.fleet.hardware import summarize
from toolkit.fleet.page import FleetPage
from toolkit.fleet.staleness import Staleness, assess
from toolkit.fleet.status import HostStatus, host_state, rack_of
from toolkit.image.ref import ImageRef, parse_image_ref
from toolkit.install.settings import InstallMode
from toolkit.inventory.cache import inventory_stamp, quick_stamp
from toolkit.inventory.hosts import Host, Inventory, load_inventory, resolve_inventory_sources
from toolkit.inventory.selection import limit_of, vault_of
from toolkit.inventory.vault import VaultOptions
from toolkit.state import open_state
from toolkit.state.cleaning import CleaningRow
from toolkit.state.db import AttemptRow, DriftRow, HostRow, LoginRow, Repo, StateDB, TaintRow, UnknownMachineRow
from toolkit.state.hardware import HwMark
from toolkit.state.rotation import RotationRow
from toolkit.state.slots import SlotRow
from toolkit.store import open_store
from toolkit.store.artifacts import Store


def image_ref_of(host: Host) -> ImageRef | None:
    """The host's inventory image reference; None when it names none (the inventory loader validated it)."""
    return parse_image_ref(host.image, f"host {host.name}: image") if host.image else None


WALK_EVERY_S = 1.0


class Fleet:
    """The inventory's hosts joined with their state: desired, served and observed builds."""
    def __init__(self, db: StateDB, store: Store, inventory_path: Path | None,
                 inventory_sources: tuple[Path, ...] | None = None, cache_dir: Path | None = None,
                 limit: str | None = None, vault: VaultOptions | None = None) -> None:
        self.db = db
        self.store = store
        self.inventory_path = inventory_path
        # every -i source (Ansible merges them); the first is inventory_path
        self.inventory_sources = inventory_sources or ((inventory_path,) if inventory_path else ())
        self.cache_dir = cache_dir  # where the resolved inventory is cached (None: the default)
        self.limit, self.vault = limit, vault  # --limit (hosts outside it are not in this fleet) and vault options
        self._lock = threading.Lock()
        self._inv: Inventory | None = None
        self._inv_stamp: str | None = None
        self._quick_stamp: str | None = None
        self._walked_at = 0.0
        self._by_mac: dict[str, Host] = {}
        self._load_error: InputError | None = None  # why the first load failed, while none succeeded

    # ---- inventory ----
    def hosts(self) -> list[Host]:
        """The inventory's hosts, by name (the inventory re-read when its sources changed)."""
        self._refresh()
        return sorted(self._by_mac.values(), key=lambda h: h.name)

    def inventory(self) -> Inventory | None:
        """The inventory, or None when there is none."""
        self._refresh()
        return self._inv

    def host_by_mac(self, mac: str) -> Host | None:
        """The host with ``mac``, or None."""
        self._refresh()
        return self._by_mac.get(mac)

    def host_by_name(self, name: str) -> Host | None:
        """The host ``name``, or None."""
        return next((h for h in self.hosts() if h.name == name), None)

    def _refresh(self) -> None:
        if self.inventory_path is None:
            return
        if not self.inventory_path.exists():
            raise InputError(f"inventory {self.inventory_path} does not exist")
        sources = [str(p) for p in self.inventory_sources]
        # The boot server asks on every request: the source files themselves are checked each time
        # (one stat each), every file under them (group_vars/, host_vars/) at most once a second.
        quick = quick_stamp(sources)
        if quick == self._quick_stamp and time.monotonic() - self._walked_at < WALK_EVERY_S:
            return self._no_first_load()
        # The first load must end before any request is answered (an empty map calls every machine
        # unknown, and a machine told so falls through to its disk); a re-read lets the requests that
        # arrive meanwhile go on with the inventory as it was. The stamps are stored only once the
        # map they describe is in place.
        if not self._lock.acquire(blocking=self._inv_stamp is None):
            return
        try:
            if quick == self._quick_stamp and time.monotonic() - self._walked_at < WALK_EVERY_S:
                return self._no_first_load()  # the request this one waited for has just read it
            stamp = inventory_stamp(sources)
            try:
                if stamp != self._inv_stamp:
                    self._load(stamp)
                self._load_error = None
            except InputError as exc:
                self._load_error = exc
                raise
            finally:
                # a broken inventory is re-read at most once a second; the last good one stays in use
                self._quick_stamp, self._walked_at = quick, time.monotonic()
        finally:
            self._lock.release()

    def _no_first_load(self) -> None:
        """No inventory was ever loaded: repeat why, rather than answer from an empty one."""
        if self._inv_stamp is None and self._load_error is not None:
            raise self._load_error

    def _load(self, stamp: str) -> None:
        inv = load_inventory(self.inventory_sources, vault=self.vault, cache_dir=self.cache_dir).subset(self.limit)
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
    def desired_in(self, repo: Repo, host: Host, row: HostRow | None) -> DesiredBuild | None:
        """The host's desired build read in ``repo``: a pinned override, else its channel's build."""
        ref = image_ref_of(host)
        override = (row.desired_image, row.desired_build) if row and row.desired_image and row.desired_build else None
        channel_row = repo.get_channel(ref.image, ref.ref) if ref else None
        pinned = bool(ref and channel_row is None and self.store.find(ref.image, ref.ref) is not None)
        return resolve_desired(ref, channel_row.build_id if channel_row else None, pinned, override)

    def desired_for(self, host: Host) -> DesiredBuild | None:
        """The host's desired build."""
        with self.db.read() as repo:
            return self.desired_in(repo, host, repo.get_host(host.name))

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

    # ---- reimage attempts (boot evidence; see toolkit.boot.evidence) ----
    def arm_attempts(self, attempts: list[tuple[str, str, str]], expires_in: float) -> float:
        """Arm (host, attempt id, build) attempts just before their power action; returns the arming time.

        From now on a boot script fetched for the host carries a token bound to the attempt; a
        second fetch within the attempt contests it.
        """
        now = time.time()
        with self.db.write() as repo:
            for host, attempt, build in attempts:
                repo.arm_attempt(host, attempt, build, now, now + expires_in)
        return now

    def disarm_attempts(self, attempts: list[tuple[str, str]]) -> None:
        """End the given (host, attempt) reimage attempts."""
        with self.db.write() as repo:
            for host, attempt in attempts:
                repo.disarm_attempt(host, attempt, time.time())

    def attempt_of(self, host: str) -> AttemptRow | None:
        """The reimage attempt armed on ``host``, or None."""
        with self.db.read() as repo:
            return repo.get_attempt(host)

    # ---- status ----
    def status_of(self, host: Host) -> HostStatus:
        """The host's status as listings show it."""
        with self.db.read() as repo:
            return self._status(repo, host)

    def status_in(self, repo: Repo, host: Host) -> HostStatus:
        """The host's status as ``repo``'s transaction sees it (a writer's own changes included)."""
        return self._status(repo, host)

    def _status(self, repo: Repo, host: Host, policy: StaleConfig | None = None, now: float = 0.0,
                phases: dict[str, str] | None = None, out: dict[str, str] | None = None,
                marks: dict[str, HwMark] | None = None, cleans: dict[str, CleaningRow] | None = None,
                slots: dict[str, SlotRow] | None = None) -> HostStatus:
        row = repo.get_host(host.name)
        cleaning = cleans.get(host.name) if cleans is not None else repo.get_cleaning(host.name)
        slot = None if host.install != InstallMode.DISK else (  # RAM hosts have no slots: no query per report
            slots.get(host.name) if slots is not None else repo.get_slots(host.name))
        try:
            desired = self.desired_in(repo, host, row)
        except InputError:
            desired = None
        observed = row.observed_build if row else None
        last = row.last_report_at if row else None
        drift = row.drift if row else ()
        taint = repo.get_taint(host.name)
        unverified = repo.get_unverified(host.name)
        stale = self._staleness(repo, host, row, desired, policy, now).reasons if policy else ()
        rotation = (out or {}).get(host.name)
        return HostStatus(
            name=host.name, rack=rack_of(host), mac=normalize_mac(host.mac) if host.mac else "",
            # the inventory's image ref; without one, the image a rollout set for the host
            image=host.image or (desired.image if desired else ""), desired=desired.build_id if desired else None,
            desired_source=desired.source if desired else "", served=row.served_build if row else None,
            observed=observed, observed_since=row.observed_since if row else None,
            booted_at=row.booted_at if row else None, last_report=last, drift=drift,
            state=host_state(desired.build_id if desired else None, observed, last, drift, taint is not None,
                             bool(stale), (phases or {}).get(host.name) == "failed", rotation is not None,
                             cleaning.state if cleaning else None,
                             fell_back=slot is not None and desired is not None
                             and slot.fell_back == desired.build_id),
            taint=taint.reason if taint else None, stale=stale, rotation=rotation,
            unverified=unverified.build_id if unverified and (last is None or unverified.at > last) else None,
            hw_changed=mark.changes if (mark := (marks.get(host.name) if marks is not None
                                                 else repo.hw_mark(host.name))) else (),
            clean_report=cleaning.reason if cleaning else None,
            slot=slot.active if slot else None, slot_a=slot.slot_a if slot else None,
            slot_b=slot.slot_b if slot else None, fell_back=slot.fell_back if slot else None,
        )

    def _staleness(self, repo: Repo, host: Host, row: HostRow | None, desired: DesiredBuild | None,
                   policy: StaleConfig, now: float) -> Staleness:
        try:
            ref = image_ref_of(host)
        except InputError:
            ref = None
        image = ref.image if ref else (desired.image if desired else "")
        channel = ref.ref if ref and repo.get_channel(ref.image, ref.ref) else None
        running = self.store.find(image, row.observed_build) if row and row.observed_build and image else None
        current = self.store.find(image, desired.build_id) if desired and image else None
        history = repo.history(image, channel) if channel else []
        return assess(host.name, image, channel, running.manifest if running else None,
                      current.manifest if current else None, history, policy, now)

    def status(self, pattern: str = "all", policy: StaleConfig | None = None) -> list[HostStatus]:
        """Every host the pattern selects; with a staleness policy, those breaking it are "stale" (with why)."""
        self._refresh()
        if self._inv is None:
            return []
        hosts = list(self._inv.hosts) if pattern == "all" else self._inv.select(pattern)
        now = time.time()
        with self.db.read() as repo:
            phases = repo.last_step_phases()
            out = _rotation_notes(repo.rotation_rows())
            marks, cleans, slots = repo.hw_marks(), repo.all_cleaning(), repo.all_slots()
            return [self._status(repo, h, policy, now, phases, out, marks, cleans, slots)
                    for h in sorted(hosts, key=lambda h: h.name)]

    def staleness(self, pattern: str, policy: StaleConfig) -> list[Staleness]:
        """Each selected host's staleness under ``policy``: age, builds behind, updates lacking, reasons."""
        self._refresh()
        hosts = (list(self._inv.hosts) if pattern == "all" else self._inv.select(pattern)) if self._inv else []
        now = time.time()
        with self.db.read() as repo:
            out = []
            for h in sorted(hosts, key=lambda h: h.name):
                row = repo.get_host(h.name)
                try:
                    desired = self.desired_in(repo, h, row)
                except InputError:
                    desired = None
                out.append(self._staleness(repo, h, row, desired, policy, now))
            return out

    def observed_image(self, name: str) -> str | None:
        """The image the host last reported, or None."""
        with self.db.read() as repo:
            row = repo.get_host(name)
        return row.observed_image if row else None

    def inventory_refs(self) -> dict[tuple[str, str], list[str]]:
        """Builds the inventory pins hosts to (``name@build-id``), so retention keeps them."""
        refs: dict[tuple[str, str], list[str]] = {}
        with self.db.read() as repo:
            for h in self.hosts():
                try:
                    ref = image_ref_of(h)
                except InputError:
                    continue
                if ref and repo.get_channel(ref.image, ref.ref) is None:
                    refs.setdefault((ref.image, ref.ref), []).append(f"pinned by {h.name} in the inventory")
        return refs

    def followers(self, image: str, channel: str) -> list[str]:
        """Inventory hosts whose image follows ``image@channel``."""
        out = []
        for h in self.hosts():
            try:
                ref = image_ref_of(h)
            except InputError:
                continue
            if ref == ImageRef(image, channel):
                out.append(h.name)
        return out

    def _selected(self, pattern: str) -> list[Host]:
        self._refresh()
        if self._inv is None:
            return []
        return sorted(self._inv.hosts if pattern == "all" else self._inv.select(pattern), key=lambda h: h.name)

    def drift(self, pattern: str = "all") -> list[DriftRow]:
        """The drifted paths of the selected hosts (host, then path), with kind and first/last seen."""
        names = {h.name for h in self._selected(pattern)}
        with self.db.read() as repo:
            return [r for r in repo.list_drift() if r.host in names]

    def logins(self, pattern: str = "all", limit: int = 500) -> list[LoginRow]:
        """Logins the agents of the selected hosts reported, newest first."""
        names = {h.name for h in self._selected(pattern)}
        with self.db.read() as repo:
            return [r for r in repo.list_logins(limit=limit) if r.host in names]

    def taints(self, pattern: str = "all") -> list[TaintRow]:
        """The tainted hosts among those ``pattern`` selects."""
        names = {h.name for h in self._selected(pattern)}
        with self.db.read() as repo:
            return [t for t in repo.list_taints() if t.host in names]

    def page(self, policy: StaleConfig | None = None, runs: int = 10) -> FleetPage:
        """What the fleet page shows: every host's status (stale under ``policy``), drift, channels, last runs."""
        hosts = self.status("all", policy)
        with self.db.read() as repo:
            drift: dict[str, list[DriftRow]] = {}
            for row in repo.list_drift():
                drift.setdefault(row.host, []).append(row)
            hardware = {r.host: summarize(r.host, r.facts, r.last_seen) for r in repo.all_latest_hardware()}
            return FleetPage(time.time(), hosts, drift, repo.list_channels(), repo.list_runs(runs), hardware)

    def unknown_machines(self) -> list[UnknownMachineRow]:
        """Machines that asked for a boot script without being in the inventory."""
        with self.db.read() as repo:
            return repo.list_unknown()


def _rotation_notes(rows: list[RotationRow]) -> dict[str, str]:
    """Host -> why it is out of rotation, from its rows (one per hook group it belongs to)."""
    notes: dict[str, str] = {}
    for r in rows:
        why = f"left out of rotation: {r.detail}" if r.state == "left" else f"held out of rotation by run {r.run_id}"
        notes.setdefault(r.host, why)
    return notes


def open_fleet(settings: Settings, inventory: str | Sequence[str] | None = None, *,
               required: bool = True) -> Fleet:
    """The fleet of the inventory found like Ansible finds it (``toolkit.inventory.selection``); a
    ``Selection`` also carries --limit (hosts outside it are not in this fleet) and the vault options."""
    sources: tuple[Path, ...]
    try:
        sources = resolve_inventory_sources(inventory, settings)
    except InputError:
        if required or inventory:  # an empty Selection: no -i given
            raise
        sources = ()
    return Fleet(open_state(settings), open_store(settings), sources[0] if sources else None, sources,
                 cache_dir=settings.cache, limit=limit_of(inventory), vault=vault_of(inventory))
