"""Nonsense numbers and states on the command line: each row stops in argparse with exit status 2.

The message names the option and says what it accepts; no verb runs, so no project, home or
inventory is needed. Rows come from issue 11's review plus every other numeric option in toolkit/cli.
"""

from __future__ import annotations

import itertools

import pytest

from toolkit.cli import build_parser, main
from toolkit.fleet.states import HostState
from toolkit.fleet.status import host_state
from toolkit.rollout.plan import Amount

RE = ["reimage", "all", "--image", "web@prod"]
LAB = ["lab", "up", "--no-vm"]
HUGE = "9" * 5000

CASES: list[tuple[list[str], str, str]] = [
    ([*RE, "--wave-size", "0"], "--wave-size", "must be at least 1 (or 1%..100%)"),
    ([*RE, "--wave-size", "0%"], "--wave-size", "must be at least 1 (or 1%..100%)"),
    ([*RE, "--wave-size", "-1"], "--wave-size", "expected a whole number or a percentage"),
    ([*RE, "--wave-size", "x"], "--wave-size", "expected a whole number or a percentage"),
    ([*RE, "--wave-size", "101%"], "--wave-size", "a percentage must be between 0% and 100%"),
    ([*RE, "--wave-size", HUGE], "--wave-size", "expected a whole number or a percentage"),
    ([*RE, "--wave-size", "2000000"], "--wave-size", "must be at most"),
    ([*RE, "--max-unavailable", "0"], "--max-unavailable", "must be at least 1"),
    ([*RE, "--max-unavailable", "0%"], "--max-unavailable", "must be at least 1"),
    ([*RE, "--max-failures", "101%"], "--max-failures", "a percentage must be between 0% and 100%"),
    ([*RE, "--max-failures", "-1"], "--max-failures", "expected a whole number or a percentage"),
    ([*RE, "--boot-timeout", "-5"], "--boot-timeout", "must be at least 1"),
    ([*RE, "--boot-timeout", "0"], "--boot-timeout", "must be at least 1"),
    ([*RE, "--boot-timeout", "nan"], "--boot-timeout", "expected a finite number"),
    ([*RE, "--boot-timeout", "inf"], "--boot-timeout", "expected a finite number"),
    ([*RE, "--boot-timeout", "1e400"], "--boot-timeout", "expected a finite number"),
    ([*RE, "--boot-timeout", "soon"], "--boot-timeout", "expected a number"),
    ([*RE, "--boot-timeout", "999999"], "--boot-timeout", "must be at most 86400"),
    ([*RE, "--retries", "-1"], "--retries", "must be at least 0"),
    ([*RE, "--retries", "1.5"], "--retries", "expected a whole number"),
    ([*RE, "--retries", "1000"], "--retries", "must be at most 100"),
    ([*RE, "--canary", "-1"], "--canary", "must be at least 0"),
    ([*RE, "--canary", HUGE], "--canary", "expected a whole number"),
    ([*RE, "--per-rack", "0"], "--per-rack", "must be at least 1"),
    ([*RE, "--per-rack", "-3"], "--per-rack", "must be at least 1"),
    (["bake", "base", "--no-root-cache=yes"], "--no-root-cache", "ignored explicit argument"),
    (["power", "all", "on", "--workers", "0"], "--workers", "must be at least 1"),
    (["power", "all", "on", "--workers", "100000"], "--workers", "must be at most 256"),
    (["bootdev", "all", "pxe", "--workers", "0"], "--workers", "must be at least 1"),
    ([*LAB, "--drop-rate", "2"], "--drop-rate", "must be at most 1"),
    ([*LAB, "--drop-rate", "-0.1"], "--drop-rate", "must be at least 0"),
    ([*LAB, "--drop-rate", "nan"], "--drop-rate", "expected a finite number"),
    ([*LAB, "--fail-rate", "1.5"], "--fail-rate", "must be at most 1"),
    ([*LAB, "--fail-rate", "-1"], "--fail-rate", "must be at least 0"),
    ([*LAB, "--nodes", "0"], "--nodes", "must be at least 1"),
    ([*LAB, "--nodes", "-2"], "--nodes", "must be at least 1"),
    ([*LAB, "--nodes", "100000000"], "--nodes", "must be at most 10000"),
    ([*LAB, "--nodes", HUGE], "--nodes", "expected a whole number"),
    ([*LAB, "--latency", "-1"], "--latency", "must be at least 0"),
    ([*LAB, "--latency", "inf"], "--latency", "expected a finite number"),
    ([*LAB, "--boot-time", "nan"], "--boot-time", "expected a finite number"),
    ([*LAB, "--boot-time", "-1"], "--boot-time", "must be at least 0"),
    ([*LAB, "--memory", "0"], "--memory", "must be at least 128"),
    ([*LAB, "--base-port", "80"], "--base-port", "must be at least 1024"),
    ([*LAB, "--base-port", "70000"], "--base-port", "must be at most 65535"),
    ([*LAB, "--seed", "-1"], "--seed", "must be at least 0"),
    (["lab", "console", "n1", "--lines", "-1"], "--lines", "must be at least 0"),
    (["fleet", "--state", "bogus"], "--state", "invalid choice: 'bogus' (choose from 'in-sync', 'pending'"),
    (["gc", "--keep", "-1"], "--keep", "must be at least 0"),
    (["gc", "--keep", "lots"], "--keep", "expected a whole number"),
    (["runs", "--limit", "0"], "--limit", "must be at least 1"),
    (["runs", "--limit", "-5"], "--limit", "must be at least 1"),
]


@pytest.mark.parametrize("argv, option, needle", CASES, ids=[" ".join(c[0][:2] + c[0][-2:])[:60] for c in CASES])
def test_bad_option_stops_in_argparse_with_exit_2(capsys, argv, option, needle):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"golden {argv[0]}") and f"argument {option}: " in last, err
    assert needle in last, err
    assert len(last) < 300


def test_reimage_message_reads_as_documented(capsys):
    with pytest.raises(SystemExit):
        main([*RE, "--wave-size", "0"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "golden reimage: error: argument --wave-size: must be at least 1 (or 1%..100%)"


def test_defaults_and_good_values_parse_to_typed_values():
    parser = build_parser()
    args = parser.parse_args(RE)
    assert (args.wave_size, args.max_failures, args.max_unavailable) == (Amount(10, True), Amount(0), None)
    assert (args.canary, args.boot_timeout, args.retries) == (1, 900.0, 1)
    args = parser.parse_args([*RE, "--wave-size", "3", "--max-unavailable", "50%", "--boot-timeout", "1.5",
                              "--canary", "0", "--max-failures", "100%"])
    assert (args.wave_size, args.max_unavailable, args.boot_timeout) == (Amount(3), Amount(50, True), 1.5)
    lab = parser.parse_args([*LAB, "--drop-rate", "0.05", "--fail-rate", "1", "--nodes", "1000"])
    assert (lab.drop_rate, lab.fail_rate, lab.nodes, lab.latency) == (0.05, 1.0, 1000, 0.0)
    assert parser.parse_args(["gc", "--keep", "0"]).keep == 0


def test_host_states_are_the_fleet_choices():
    seen = {host_state(d, o, t, drift) for d, o, t, drift in
            itertools.product([None, "b1"], [None, "b1", "b2"], [None, 1.0], [(), ("etc/x",)])}
    assert seen == set(HostState)
