"""Pure helpers of the benchmarks: percentiles, ratios, table formatting, extrapolation, targets."""

import pytest

from bench.bmc_fanout import extrapolate, targets
from bench.common import fmt, percentile, ratio, render_table, verdict


def test_percentile_interpolates_and_handles_edges():
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile([4, 1, 3, 2], 0) == 1
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


def test_ratio_and_verdict():
    assert ratio(10, 2) == 5
    assert ratio(None, 2) is None
    assert ratio(1, 0) is None
    assert verdict(True) == "MET"
    assert verdict(False) == "NOT MET"
    assert verdict(None) == "n/a"


def test_fmt_numbers():
    assert fmt(None) == "-"
    assert fmt(1234) == "1,234"
    assert fmt(1234.5) == "1,234.50"
    assert fmt(0.0004) == "0.0004"
    assert fmt(True) == "yes"


def test_render_table_aligns_numbers_right_and_text_left():
    out = render_table(("NAME", "SECONDS"), [("ours", 1.5), ("ipmitool", 12.25)]).splitlines()
    assert out[0] == "NAME      SECONDS"
    assert out[1] == "--------  -------"
    assert out[2] == "ours         1.50"
    assert out[3] == "ipmitool    12.25"


def test_extrapolate_scales_wall_and_counts_not_rates():
    row = {"contender": "ipmitool", "measured_nodes": 200, "wall_s": 10.0, "cpu_s": 4.0, "hosts_ok": 190,
           "failures": 10, "commands_per_s": 57.0, "p50_ms": 100.0}
    out = extrapolate(row, 1000)
    assert out["wall_s"] == 50.0 and out["cpu_s"] == 20.0
    assert out["hosts_ok"] == 950 and out["failures"] == 50
    assert out["commands_per_s"] == 57.0 and out["p50_ms"] == 100.0
    assert "extrapolated from 200" in out["contender"]
    assert out["measured_wall_s"] == 10.0


def _row(name, wall, cps, failures=0, timed_out=False):
    return {"contender": name, "wall_s": wall, "commands_per_s": cps, "failures": failures, "timed_out": timed_out}


def test_targets_judge_the_largest_lossiest_case():
    cases = [
        {"nodes": 1000, "drop_rate": 0.0, "rows": [_row("ours", 20, 150), _row("ipmitool", 200, 15)]},
        {"nodes": 1000, "drop_rate": 0.05, "rows": [_row("ours", 70, 43, failures=1), _row("ipmitool", 300, 10)]},
    ]
    got = {t["target"]: t["met"] for t in targets(cases)}
    assert got["1000-host wave < 60 s at 5% loss"] is False
    assert got["zero unrecovered failures (1000 hosts, 5% loss)"] is False
    assert got[">= 5x ipmitool throughput (1000 hosts, 0% loss)"] is True
    assert got[">= 5x ipmitool throughput (1000 hosts, 5% loss)"] is False
