"""The fleet as Prometheus gauges: hosts by state, hosts by image and channel, each channel's build age,
and when a nightly last succeeded. Read at scrape time from the same state ``golden fleet`` shows."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from toolkit.fleet.states import HostState

if TYPE_CHECKING:
    from toolkit.fleet.fleet import Fleet


@dataclass(frozen=True)
class FleetGauges:
    by_state: dict[str, int]
    by_image: dict[tuple[str, str], int]  # (image, channel or build id) -> hosts following it
    build_age_s: dict[tuple[str, str], float] = field(default_factory=dict)  # (image, channel) -> age of its build
    nightly_last_success: float | None = None  # when the newest succeeded nightly started

    def families(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        states = GaugeMetricFamily("golden_fleet_hosts", "Inventory hosts by state.", labels=["state"])
        for state in HostState:  # every state, zero too: a dashboard sums them without gaps
            states.add_metric([state.value], self.by_state.get(state.value, 0))
        images = GaugeMetricFamily("golden_fleet_hosts_by_image", "Inventory hosts by the image and channel "
                                   "they follow.", labels=["image", "channel"])
        for (image, channel), n in sorted(self.by_image.items()):
            images.add_metric([image, channel], n)
        age = GaugeMetricFamily("golden_channel_build_age_seconds", "Age of the build each channel points at "
                                "(since it was baked).", labels=["image", "channel"])
        for (image, channel), seconds in sorted(self.build_age_s.items()):
            age.add_metric([image, channel], seconds)
        out = [states, images, age]
        if self.nightly_last_success is not None:
            out.append(GaugeMetricFamily("golden_nightly_last_success_timestamp_seconds",
                                         "Start of the newest nightly that succeeded (Unix time).",
                                         value=self.nightly_last_success))
        return out


def _baked_at(created_at: str) -> float | None:
    try:
        return datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def fleet_gauges(fleet: Fleet, nightly_last_success: float | None = None, now: float | None = None) -> FleetGauges:
    """The gauges now: one status pass over the inventory and the channels; the nightly's last success
    comes from the caller (the nightly is a stage above the fleet)."""
    now = time.time() if now is None else now
    hosts = fleet.status("all") if fleet.inventory_path is not None else []
    by_image = Counter(tuple(h.image.split("@", 1)) if "@" in h.image else (h.image, "") for h in hosts if h.image)
    ages: dict[tuple[str, str], float] = {}
    with fleet.db.read() as repo:
        channels = repo.list_channels()
    for ch in channels:
        build = fleet.store.find(ch.image, ch.build_id)
        baked = _baked_at(build.manifest.created_at) if build is not None else None
        if baked is not None:
            ages[(ch.image, ch.channel)] = max(0.0, now - baked)
    return FleetGauges(dict(Counter(h.state for h in hosts)), {(k[0], k[1]): n for k, n in by_image.items()},
                       ages, nightly_last_success)
