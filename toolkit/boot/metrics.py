"""The boot server's metrics, rendered in Prometheus text format (version 0.0.4).

Hand-written rather than prometheus-client: counters and one histogram family are a few lines,
the output stays byte-for-byte what dashboards and tests already read (integer counters, no
``_created`` series), and a render takes one lock. What answers "is the boot server healthy":
request durations per route (``golden_http_request_duration_seconds``), requests in flight and
connections open, requests refused because every worker was busy, why connections were closed,
state writes dropped, rows pruned, and the version (``golden_build_info``).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from toolkit import __version__

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

    def render(self, name: str, label: str) -> list[str]:
        """The histogram in the Prometheus text format."""
        lines = []
        for key, row in sorted(self.counts.items()):
            total = 0
            for bound, n in zip((*BUCKETS, None), row, strict=True):
                total += n
                le = "+Inf" if bound is None else f"{bound:g}"
                lines.append(f'{name}_bucket{{{label}="{key}",le="{le}"}} {total}')
            lines.append(f'{name}_sum{{{label}="{key}"}} {self.sums[key]:.6f}')
            lines.append(f'{name}_count{{{label}="{key}"}} {total}')
        return lines


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


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

    def render(self, closed: Counter[str] | None = None) -> str:
        """Every metric in the Prometheus text format."""
        gauges = self.gauges()
        with self._lock:
            lines = self._counters()
            lines += _family("golden_http_request_duration_seconds", "histogram",
                             "Time from a complete request head to the last byte sent, by route.")
            lines += self.durations.render("golden_http_request_duration_seconds", "route")
        lines += _family("golden_http_connections_closed_total", "counter",
                         "Connections the server closed, by reason (idle_timeout, header_timeout, busy, evicted, "
                         "head_too_large, shutdown, client, reset).")
        lines += [f'golden_http_connections_closed_total{{reason="{k}"}} {n}'
                  for k, n in sorted((closed or {}).items())]
        lines += self._gauges(gauges)
        lines += _family("golden_build_info", "gauge", "The golden version serving.")
        lines.append(f'golden_build_info{{version="{__version__}"}} 1')
        return "\n".join(lines) + "\n"

    def _counters(self) -> list[str]:
        lines = _family("golden_http_requests_total", "counter", "HTTP requests served, by route and status code.")
        lines += [f'golden_http_requests_total{{route="{r}",code="{c}"}} {n}'
                  for (r, c), n in sorted(self.requests.items())]
        lines += _family("golden_http_response_bytes_total", "counter", "Response body bytes sent, by route.")
        lines += [f'golden_http_response_bytes_total{{route="{r}"}} {n}' for r, n in sorted(self.bytes.items())]
        lines += _family("golden_boot_scripts_total", "counter",
                         "iPXE scripts served, by kind (build, unknown, no-build).")
        lines += [f'golden_boot_scripts_total{{kind="{k}"}} {n}' for k, n in sorted(self.scripts.items())]
        lines += _family("golden_reports_total", "counter", "Agent reports received, by result.")
        lines += [f'golden_reports_total{{result="{r}"}} {self.reports[r]}' for r in ("accepted", "rejected")]
        lines += _family("golden_report_rejects_total", "counter",
                         "Agent reports rejected, by reason (expired: the token outlived its lifetime).")
        lines += [f'golden_report_rejects_total{{reason="{k}"}} {n}' for k, n in sorted(self.rejects.items())]
        lines += _family("golden_boot_attempts_contested_total", "counter",
                         "Reimage attempts whose boot script was fetched twice (nobody's report counts).")
        lines.append(f"golden_boot_attempts_contested_total {self.contested}")
        lines += _family("golden_state_write_failures_total", "counter",
                         "State DB writes dropped while serving (full or read-only database).")
        lines.append(f"golden_state_write_failures_total {self.state_write_failures}")
        lines += _family("golden_state_pruned_rows_total", "counter",
                         "Rows the retention pruner deleted, by table.")
        lines += [f'golden_state_pruned_rows_total{{table="{k}"}} {n}' for k, n in sorted(self.pruned.items())]
        return lines

    @staticmethod
    def _gauges(g: dict[str, float]) -> list[str]:
        rows = (("golden_http_requests_in_flight", "busy", "Requests being worked on now."),
                ("golden_http_requests_queued", "queued", "Requests waiting for a free worker."),
                ("golden_http_connections_waiting", "waiting",
                 "Open connections between requests (idle or sending their request head)."),
                ("golden_http_workers", "workers", "Worker threads (the most requests worked on at once)."))
        lines: list[str] = []
        for name, key, help_text in rows:
            if key in g:
                lines += _family(name, "gauge", help_text)
                lines.append(f"{name} {int(g[key])}")
        return lines
