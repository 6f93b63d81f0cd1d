"""The boot server's metrics, exposed through prometheus-client (text format 0.0.4).

The server counts in plain counters under one lock (cheap on every request); a scrape turns them
into metric families for prometheus-client's exposition, beside its process metrics (CPU, memory,
open files) and the fleet's gauges (``toolkit.fleet.gauges``: hosts by state, by image and channel,
build age per channel, the last successful nightly). What answers "is the boot server healthy":
request durations per route (``golden_http_request_duration_seconds``), requests in flight and
connections open, requests refused because every worker was busy, why connections were closed,
state writes dropped, rows pruned, and the version (``golden_build_info``).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from toolkit import __version__
from toolkit.fleet.gauges import FleetGauges

# Seconds. A /boot answers in milliseconds; artifact transfers take seconds to minutes.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Histogram:
    """Cumulative buckets, sum and count per label value."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, key: str, value: float) -> None:
        """Count ``value`` in ``key``'s buckets."""
        row = self.counts.setdefault(key, [0] * (len(BUCKETS) + 1))
        row[bisect.bisect_left(BUCKETS, value)] += 1
        self.sums[key] = self.sums.get(key, 0.0) + value

    def family(self, name: str, help_text: str, label: str) -> HistogramMetricFamily:
        """The histogram as a prometheus-client metric family."""
        fam = HistogramMetricFamily(name, help_text, labels=[label])
        for key, row in sorted(self.counts.items()):
            total, buckets = 0, []
            for bound, n in zip((*BUCKETS, None), row, strict=True):
                total += n
                buckets.append(("+Inf" if bound is None else f"{bound:g}", total))
            fam.add_metric([key], buckets, self.sums[key])
        return fam


def _counter(name: str, help_text: str, labels: list[str], rows: Iterable[tuple[Any, float]]) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, help_text, labels=labels)
    for key, n in rows:
        fam.add_metric([str(k) for k in (key if isinstance(key, tuple) else (key,))], n)
    return fam


def _gauge(name: str, help_text: str, labels: list[str], rows: Iterable[tuple[Any, float]]) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, help_text, labels=labels)
    for key, n in rows:
        fam.add_metric([str(k) for k in (key if isinstance(key, tuple) else (key,))], n)
    return fam


class _Scrape:
    """One scrape's families: what prometheus-client's ``generate_latest`` collects from."""

    def __init__(self, *parts: Callable[[], Iterable[Metric]]) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        """Every metric family of every part, for one scrape."""
        for part in self.parts:
            yield from part()


class Metrics:
    """Counters and the duration histogram; ``gauges`` reads the connection pool at render time."""

    def __init__(self, gauges: Callable[[], dict[str, float]] | None = None) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.bytes: Counter[str] = Counter()
        self.scripts: Counter[str] = Counter()
        self.reports: Counter[str] = Counter()
        self.rejects: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        self.pruned: Counter[str] = Counter()
        self.durations = Histogram()
        self.state_write_failures = 0
        self.contested = 0
        self.gauges = gauges or (lambda: {})
        # registry=None: collected per scrape, never registered globally (several servers share a process in tests)
        self._process = ProcessCollector(registry=None)
        self._platform = PlatformCollector(registry=None)

    def add(self, counter: str, key: Any, n: int = 1) -> None:
        """Add ``n`` to ``counter``'s count for ``key``."""
        with self._lock:
            getattr(self, counter)[key] += n

    def bump(self, name: str) -> int:
        """Add one to the counter ``name``; its new value."""
        with self._lock:
            value = int(getattr(self, name)) + 1
            setattr(self, name, value)
            return value

    def observe(self, route: str, seconds: float) -> None:
        """Record a request's duration on ``route``."""
        with self._lock:
            self.durations.observe(route, seconds)

    def render(self, closed: Counter[str] | None = None, fleet: FleetGauges | None = None) -> str:
        """Every metric in the Prometheus text format."""
        gauges = self.gauges()
        with self._lock:
            families = [*self._counters(), self.durations.family(
                "golden_http_request_duration_seconds",
                "Time from a complete request head to the last byte sent, by route.", "route")]
        families.append(_counter("golden_http_connections_closed_total",
                                 "Connections the server closed, by reason (idle_timeout, header_timeout, busy, "
                                 "evicted, head_too_large, shutdown, client, reset).", ["reason"],
                                 sorted((closed or {}).items())))
        families += self._gauges(gauges)
        families.append(_gauge("golden_build_info", "The golden version serving.", ["version"], [(__version__, 1)]))
        families += fleet.families() if fleet is not None else []
        scrape = _Scrape(lambda: families, self._process.collect, self._platform.collect)
        return generate_latest(scrape).decode()

    def _counters(self) -> list[Metric]:
        return [
            _counter("golden_http_requests_total", "HTTP requests served, by route and status code.",
                     ["route", "code"], sorted(self.requests.items())),
            _counter("golden_http_response_bytes_total", "Response body bytes sent, by route.", ["route"],
                     sorted(self.bytes.items())),
            _counter("golden_boot_scripts_total", "iPXE scripts served, by kind (build, unknown, no-build).",
                     ["kind"], sorted(self.scripts.items())),
            _counter("golden_reports_total", "Agent reports received, by result.", ["result"],
                     [(r, self.reports[r]) for r in ("accepted", "rejected")]),
            _counter("golden_report_rejects_total",
                     "Agent reports rejected, by reason (expired: the token outlived its lifetime).", ["reason"],
                     sorted(self.rejects.items())),
            _counter("golden_boot_attempts_contested_total",
                     "Reimage attempts whose boot script was fetched twice (nobody's report counts).", [],
                     [((), self.contested)]),
            _counter("golden_state_write_failures_total",
                     "State DB writes dropped while serving (full or read-only database).", [],
                     [((), self.state_write_failures)]),
            _counter("golden_state_pruned_rows_total", "Rows the retention pruner deleted, by table.", ["table"],
                     sorted(self.pruned.items())),
        ]

    @staticmethod
    def _gauges(g: dict[str, float]) -> list[Metric]:
        rows = (("golden_http_requests_in_flight", "busy", "Requests being worked on now."),
                ("golden_http_requests_queued", "queued", "Requests waiting for a free worker."),
                ("golden_http_connections_waiting", "waiting",
                 "Open connections between requests (idle or sending their request head)."),
                ("golden_http_workers", "workers", "Worker threads (the most requests worked on at once)."))
        return [_gauge(name, help_text, [], [((), g[key])]) for name, key, help_text in rows if key in g]
