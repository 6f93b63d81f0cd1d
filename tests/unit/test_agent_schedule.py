"""The agent's schedule: 1,000 nodes failing or reporting together do not come back in lockstep."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import random
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

AGENT = Path(__file__).resolve().parents[2] / "roles" / "golden_agent" / "files" / "golden-agent"
NODES = 1000


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("golden_agent", str(AGENT))
    spec = importlib.util.spec_from_loader("golden_agent", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def agent() -> ModuleType:
    return _load()


def _retry_times(agent: ModuleType, config: dict, rng: random.Random, horizon: float) -> list[float]:
    """When one node retries after the server went away at t=0 (it never comes back within ``horizon``)."""
    t, n, out = 0.0, 0, []
    while True:
        n += 1
        t += agent.next_delay("retry", n, config, rng.random)
        if t > horizon:
            return out
        out.append(t)


def test_retry_delays_are_bounded_full_jitter(agent: ModuleType) -> None:
    config = dict(agent.DEFAULTS)
    rng = random.Random(1)
    for n in range(1, 40):
        delays = [agent.next_delay("retry", n, config, rng.random) for _ in range(200)]
        ceiling = min(config["backoff_max_s"], config["backoff_initial_s"] * 2 ** (n - 1))
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling * 0.8  # spread over the whole range, not a fixed step


def test_a_thousand_nodes_retrying_together_are_spread(agent: ModuleType) -> None:
    config = dict(agent.DEFAULTS)  # backoff 2 s doubling to 60 s
    rng = random.Random(7)
    per_tenth: Counter[int] = Counter()  # retries per 100 ms window
    per_second: Counter[int] = Counter()
    for _ in range(NODES):
        times = _retry_times(agent, config, rng, horizon=300.0)
        per_tenth.update(int(t * 10) for t in times)
        per_second.update(int(t) for t in times)
    # lockstep (the old fixed doubling: 2, 6, 14, 30, 62 s ...) put all 1,000 retries into one instant, every time
    assert max(per_tenth.values()) <= NODES * 0.1, per_tenth.most_common(3)
    late = [per_second[s] for s in range(60, 300)]
    assert max(late) <= NODES * 0.07, max(late)  # at the 60 s cap: ~1000/30 a second on average


def test_periodic_reports_of_a_thousand_nodes_are_spread(agent: ModuleType) -> None:
    config = dict(agent.DEFAULTS)
    interval = float(config["interval_s"])
    rng = random.Random(3)
    delays = [agent.next_delay("report", 0, config, rng.random) for _ in range(NODES)]
    assert all(interval * 0.5 <= d <= interval * 1.5 for d in delays)
    per_second = Counter(int(d) for d in delays)
    assert max(per_second.values()) <= 12  # 1,000 over 300 s: ~3.3 a second, never a burst
    assert abs(sum(delays) / NODES - interval) < interval * 0.05  # the mean interval is kept


def test_jitter_is_clamped(agent: ModuleType) -> None:
    assert agent.report_delay(100.0, 5.0, lambda: 0.0) == 0.0
    assert agent.report_delay(100.0, -1.0, lambda: 0.9) == 100.0
    assert agent.backoff_delay(10_000, 2.0, 60.0, lambda: 1.0) == 60.0
