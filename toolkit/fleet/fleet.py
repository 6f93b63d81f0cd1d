"""The fleet: the inventory, the state DB and the store, as the boot server, the rollout and the CLI see them.

It owns the inventory view (hosts by MAC, re-read when the file changes), desired state (a
rollout's override, else the inventory's image resolved now), the attempts a reimage arms on a
host, and the per-host status. Boot decisions and report checking live in ``toolkit.boot``;
the pure parts live in ``desired`` and ``status``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.core.mac import normalize_mac
from toolkit.fleet.desired import DesiredBuild, resolve_desired
from toolkit.fleet.status import HostStatus, host_state, rack_of
from toolkit.image.ref import ImageRef, parse_image_ref
from toolkit.inventory.hosts import Host, Inventory, load_inventory, resolve_inventory_path
from toolkit.state import open_state
from toolkit.state.db import AttemptRow, HostRow, Repo, StateDB, UnknownMachineRow
from toolkit.store import open_store
from toolkit.store.artifacts import Store


def image_ref_of(host: Host) -> ImageRef | None:
    """The host's inventory image reference; None when it names none (the inventory loader validated it)."""
    return parse_image_ref(host.image, f"host {host.name}: image") if host.image else None


class Fleet:
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

    def inventory(self) -> Inventory | None:
        self._refresh()
        return self._inv

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
    def desired_in(self, repo: Repo, host: Host, row: HostRow | None) -> DesiredBuild | None:
        ref = image_ref_of(host)
        override = (row.desired_image, row.desired_build) if row and row.desired_image and row.desired_build else None
        channel_row = repo.get_channel(ref.image, ref.ref) if ref else None
        pinned = bool(ref and channel_row is None and self.store.find(ref.image, ref.ref) is not None)
        return resolve_desired(ref, channel_row.build_id if channel_row else None, pinned, override)

    def desired_for(self, host: Host) -> DesiredBuild | None:
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
        with self.db.write() as repo:
            for host, attempt in attempts:
                repo.disarm_attempt(host, attempt, time.time())

    def attempt_of(self, host: str) -> AttemptRow | None:
        with self.db.read() as repo:
            return repo.get_attempt(host)

    # ---- status ----
    def status_of(self, host: Host) -> HostStatus:
        with self.db.read() as repo:
            return self._status(repo, host)

    def _status(self, repo: Repo, host: Host) -> HostStatus:
        row = repo.get_host(host.name)
        try:
            desired = self.desired_in(repo, host, row)
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

    def observed_image(self, name: str) -> str | None:
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

    def unknown_machines(self) -> list[UnknownMachineRow]:
        with self.db.read() as repo:
            return repo.list_unknown()


def open_fleet(settings: Settings, inventory: str | None = None, *, required: bool = True) -> Fleet:
    """The fleet of the inventory found like Ansible finds it (-i, GOLDEN_INVENTORY, golden.yaml)."""
    path: Path | None
    try:
        path = resolve_inventory_path(inventory, settings)
    except InputError:
        if required or inventory is not None:
            raise
        path = None
    return Fleet(open_state(settings), open_store(settings), path)
