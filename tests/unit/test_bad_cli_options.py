"""Nonsense numbers and states on the command line: each row stops in argparse with exit status 2.

The message names the option and says what it accepts; no verb runs, so no project, home or
inventory is needed. Rows come from issue 11's review plus every other numeric option in toolkit/cli.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.cli import build_parser, main
from toolkit.fleet.states import HostState
from toolkit.fleet.status import host_state
from toolkit.rollout.plan import Amount

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = str(Path(sys.executable).parent / "golden")
RE = ["reimage", "all", "--image", "web@prod"]
DUR = "must be a duration like 90s, 15m, 2h or 14d (a bare number is seconds)"
BG = ["break-glass", "node1", "--reason", "r", "--pubkey", "k.pub"]
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
    ([*RE, "--boot-timeout", "-5"], "--boot-timeout", DUR),
    ([*RE, "--boot-timeout", "0"], "--boot-timeout", "must be between 1s and 1d, got 0"),
    ([*RE, "--boot-timeout", "nan"], "--boot-timeout", DUR),
    ([*RE, "--boot-timeout", "inf"], "--boot-timeout", DUR),
    ([*RE, "--boot-timeout", "1e400"], "--boot-timeout", DUR),
    ([*RE, "--boot-timeout", "soon"], "--boot-timeout", DUR),
    ([*RE, "--boot-timeout", "15x"], "--boot-timeout", DUR),
    ([*RE, "--boot-timeout", "999999"], "--boot-timeout", "must be between 1s and 1d, got 999999"),
    ([*RE, "--boot-timeout", "25h"], "--boot-timeout", "must be between 1s and 1d, got 25h"),
    ([*RE, "--contest-window", "2h"], "--contest-window", "must be between 0s and 1h, got 2h"),
    (["serve", "--token-ttl", "30"], "--token-ttl", "must be between 1m and 30d, got 30"),
    (["serve", "--retention", "30"], "--retention", "must be between 1h and 3650d, got 30"),  # not 30 days
    (["serve", "--drain", "10m"], "--drain", "must be between 0s and 5m, got 10m"),
    (["reimage", "--state", "hw-changd"], "--state", "invalid choice: 'hw-changd'"),
    (["fleet", "--state", "hw-changed"], "--state", "invalid choice: 'hw-changed'"),  # a mark: fleet --hw-changed
    ([*RE, "--retries", "-1"], "--retries", "must be at least 0"),
    ([*RE, "--retries", "1.5"], "--retries", "expected a whole number"),
    ([*RE, "--retries", "1000"], "--retries", "must be at most 100"),
    (["retire", "n1", "--reason", "r", "--boot-timeout", "8d"], "--boot-timeout", "must be between 1s and 1w, got 8d"),
    (["retire", "n1", "--reason", "r", "--wave-size", "0"], "--wave-size", "must be at least 1 (or 1%..100%)"),
    (["retire", "n1", "--reason", "r", "--max-failures", "-1"], "--max-failures", "expected a whole number"),
    (["retire", "n1", "--reason", "r", "--canary", "-1"], "--canary", "must be at least 0"),
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
    (["reimage", "--state", "bogus"], "--state", "invalid choice: 'bogus' (choose from 'in-sync', 'pending'"),
    ([*BG, "--ttl", "0s"], "--ttl", "must be between 1s and 1d, got 0s"),
    ([*BG, "--ttl", "25h"], "--ttl", "must be between 1s and 1d, got 25h"),
    ([*BG, "--ttl", "1y"], "--ttl", DUR),
    ([*BG, "--ttl=-5m"], "--ttl", DUR),
    ([*BG, "--ttl", HUGE], "--ttl", DUR),
    ([*BG, "--ttl", "1h\n"], "--ttl", DUR),
    (["gc", "--keep", "-1"], "--keep", "must be at least 0"),
    (["gc", "--keep", "lots"], "--keep", "expected a whole number"),
    (["runs", "--limit", "0"], "--limit", "must be at least 1"),
    (["runs", "--limit", "-5"], "--limit", "must be at least 1"),
    (["nightly", "--lab-nodes", "0"], "--lab-nodes", "must be at least 1"),
    (["nightly", "--lab-nodes", "17"], "--lab-nodes", "must be at most 16"),
    (["nightly", "--lab-memory", "64"], "--lab-memory", "must be at least 512"),
    (["nightly", "--boot-timeout", "nan"], "--boot-timeout", DUR),
    (["nightly", "--boot-timeout", "5"], "--boot-timeout", "must be between 30s and 1d, got 5"),
    (["console", "node1", "--follow", "--seconds", "0"], "--seconds", "must be between 1s and 1w, got 0"),
    (["console", "node1", "--follow", "--seconds", "8d"], "--seconds", "must be between 1s and 1w, got 8d"),
    (["console", "node1", "--follow", "--seconds", "soon"], "--seconds", DUR),
    (["console", "node1", "--follow", "--seconds", "nan"], "--seconds", DUR),
    (["console", "node1", "--follow", "--seconds", HUGE], "--seconds", DUR),
]

# Values argparse cannot judge alone: the verb refuses them (exit 2) before it runs anything.
NIGHTLY_INPUT_CASES: list[tuple[list[str], str]] = [
    (["nightly", "--images", "../etc"], "image '../etc' is not a valid name"),
    (["nightly", "--images", "base,Web"], "image 'Web' is not a valid name"),
    (["nightly", "--promote-to", "dev"], "--promote-to dev: the nightly publishes to dev itself"),
    (["nightly", "--promote-to", "Prod!"], "channel 'Prod!' is not a valid name"),
    (["nightly", "--promote-to", "none", "--rollout", "staging"], "--rollout needs --promote-to"),
    (["nightly", "--notify", "ftp://example.invalid/x"], "--notify 'ftp://example.invalid/x': expected an http(s) URL"),
    (["nightly", "--notify", "http:///nohost"], "expected an http(s) URL"),
    (["nightly", "--install-timer", "--at", "25:00"], "--at '25:00': expected HH:MM"),
    (["nightly", "--install-timer", "--at", "2am"], "--at '2am': expected HH:MM"),
    # an option that means something only with another: refused, never ignored (the nightly would run)
    (["nightly", "--at", "03:00"], "--at needs --install-timer"),
    (["nightly", "--unit-dir", "/tmp/units"], "--unit-dir needs --install-timer"),
]

# Runtime refusals of the operator conventions: one line, exit 2, nothing started.
OPERATOR_CASES: list[tuple[list[str], dict[str, str], str]] = [
    (["break-glass", "web01"], {}, "break-glass needs --reason, --ttl, --pubkey to grant"),
    (["break-glass", "--reason", "r", "--ttl", "5m"], {}, "break-glass needs HOST, --pubkey to grant"),
    (["serve", "--fleet-token-file", "tok", "-i", "inv.yml"], {"tok": "short\n", "inv.yml": "all: {}\n"},
     "--fleet-token-file tok: the token is shorter than 16 characters"),
    (["serve", "--fleet-token-file", "missing", "-i", "inv.yml"], {"inv.yml": "all: {}\n"},
     "--fleet-token-file missing: cannot read a token from it"),
    (["inventory", "-i", "lab"], {}, "inventory file not found"),  # the lab's, asked for, but no lab is up
    (["hw", "all", "--accept", "-i", "inv.yml"], {"inv.yml": "all: {}\n"},
     "--accept needs --reason: say why the hardware change is expected"),
]


@pytest.mark.parametrize("argv, files, needle", OPERATOR_CASES, ids=[" ".join(c[0])[:40] for c in OPERATOR_CASES])
def test_operator_refusals_are_one_line(capsys, monkeypatch, tmp_path, argv, files, needle):
    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and needle in err and len(err.strip().splitlines()) <= 2, err
    assert not (tmp_path / "home" / "state.db").exists()


# Verbs that write into a project, run outside one (no images/ and roles/ here or above): exit 2, nothing written.
OUTSIDE_PROJECT_CASES: list[list[str]] = [["role", "new", "web"], ["role", "lint"], ["role", "test", "web"],
                                          ["bake", "base"], ["validate"], ["nightly"]]


@pytest.mark.parametrize("argv", OUTSIDE_PROJECT_CASES, ids=[" ".join(a) for a in OUTSIDE_PROJECT_CASES])
def test_project_verbs_refuse_outside_a_project(capsys, monkeypatch, tmp_path, argv):
    monkeypatch.delenv("GOLDEN_PROJECT", raising=False)
    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in (ROOT / "roles").iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no golden project found" in err, err
    assert sorted(p.name for p in (ROOT / "roles").iterdir()) == before  # golden's own roles untouched
    assert list(tmp_path.iterdir()) == []  # and nothing written where it ran


def test_no_inventory_names_every_place_tried(capsys, monkeypatch, tmp_path):
    for k in ("GOLDEN_INVENTORY", "ANSIBLE_INVENTORY", "GOLDEN_PROJECT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ANSIBLE_CONFIG", str(tmp_path / "none.cfg"))
    (tmp_path / "home" / "lab").mkdir(parents=True)
    (tmp_path / "home" / "lab" / "inventory.yaml").write_text("all: {hosts: {n1: {}}}\n")  # a lab is up
    monkeypatch.chdir(tmp_path)
    assert main(["power", "all", "status"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("golden: error: no inventory: tried -i (not given), GOLDEN_INVENTORY (unset), "
                             "ANSIBLE_INVENTORY (unset), inventory: in "), err
    assert "ansible.cfg (none found)" in err[0] and "-i lab" in err[1] and len(err) == 2, err


def test_closed_pipe_ends_quietly_like_cat(tmp_path):
    # the reader is gone before golden writes: killed by SIGPIPE like any Unix filter, no traceback
    env = {**os.environ, "GOLDEN_HOME": str(tmp_path / "home")}
    for argv in (["--json", "images"], ["--json", "runs"], ["help"]):
        proc = subprocess.Popen([GOLDEN, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == -signal.SIGPIPE and err == "", (argv, err)

# lab up's firmware and network options: refused (exit 2) before a file is written or a process started.
# The last three read the host's own interfaces with `ip` (nothing is changed).
LAB_INPUT_CASES: list[tuple[list[str], str]] = [
    (["lab", "up", "--uefi"], "--uefi needs --bridge BR"),
    (["lab", "up", "--secure-boot", "--bridge", "br0"], "--secure-boot needs --uefi"),
    (["lab", "up", "--netns", "ns1"], "--netns needs --bridge BR"),
    ([*LAB, "--uefi", "--bridge", "br0"], "--uefi, --bridge need QEMU machines"),
    (["lab", "up", "--bridge", "br0,x"], "--bridge 'br0,x' is not an interface name"),
    (["lab", "up", "--bridge", "br0", "--netns", "a/b"], "--netns 'a/b' is not a network namespace name"),
    (["lab", "up", "--uefi", "--bridge", "br0", "--netns", "golden-no-such-ns"],
     "--netns golden-no-such-ns: no such network namespace"),
    (["lab", "up", "--bridge", "gnosuchbr0"], "--bridge gnosuchbr0: no such interface"),
    (["lab", "up", "--uefi", "--bridge", "lo"], "--bridge lo: the interface is not a bridge"),
]


@pytest.mark.parametrize("argv, needle", LAB_INPUT_CASES, ids=[" ".join(c[0][2:])[:50] for c in LAB_INPUT_CASES])
def test_bad_lab_network_exits_2_before_running(capsys, monkeypatch, tmp_path, argv, needle):
    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and needle in err, err
    assert not (tmp_path / "home" / "lab").exists()


@pytest.mark.parametrize("argv, needle", NIGHTLY_INPUT_CASES,
                         ids=[" ".join(c[0][1:])[:50] for c in NIGHTLY_INPUT_CASES])
def test_bad_nightly_input_exits_2_before_running(capsys, monkeypatch, tmp_path, argv, needle):
    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    assert main([*argv, "--unit-dir", str(tmp_path / "units")] if "--install-timer" in argv else argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and needle in err, err
    assert not (tmp_path / "home" / "runs").exists() and not (tmp_path / "units").exists()


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
    seen = {host_state(d, o, t, drift, tainted, stale, failed, drained, cleaning, fell_back)
            for d, o, t, drift, tainted, stale, failed, drained, cleaning, fell_back in
            itertools.product([None, "b1"], [None, "b1", "b2"], [None, 1.0], [(), ("etc/x",)], [False, True],
                              [False, True], [False, True], [False, True],
                              [None, HostState.CLEANING.value, HostState.CLEAN.value, HostState.CLEAN_FAILED.value],
                              [False, True])}
    assert seen == set(HostState)


PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq0Zk0m6rWb7QmFzS0ZbYt2b3mX1c2Vv0jQ8t4X3k0M alice@laptop\n"
GRANT_CASES: list[tuple[str, list[str], dict[str, str], str]] = [
    ("empty-reason", ["--reason", "  "], {}, "--reason must say why in one line"),
    ("newline-reason", ["--reason", "a\nb"], {}, "--reason must say why in one line"),
    ("long-reason", ["--reason", "x" * 501], {}, "--reason must say why in one line"),
    ("no-pubkey", ["--pubkey", "missing.pub"], {}, "cannot read it"),
    ("private-key", [], {"k.pub": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n"},
     "is a private key"),
    ("garbage-pubkey", [], {"k.pub": "hello world\n"}, "expected one OpenSSH public key line"),
    ("two-keys", [], {"k.pub": PUBKEY + PUBKEY}, "expected one OpenSSH public key line"),
    ("option-in-key", [], {"k.pub": "-oProxyCommand=x AAAAC3NzaC1lZDI1NTE5AAAAIBq0Zk0m\n"}, "expected one OpenSSH"),
    ("not-a-key", [], {"k.pub": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq0Zk0m6rWb7Q\n"}, "cannot read it as a"),
    ("binary-pubkey", [], {"k.pub": "\udcff\x00"}, "cannot read it"),
    ("principal-space", ["--principal", "a b"], {}, "--principal must be a name"),
    ("principal-option", ["--principal=-oX=y"], {}, "--principal must be a name"),
    ("principal-comma", ["--principal", "root,admin"], {}, "--principal must be a name"),
    ("unknown-host", ["--host-override", "node9"], {}, "host 'node9' is not in the inventory"),
    ("out-in-missing-folder", ["--out", "nowhere/cert.pub"], {}, "--out nowhere/cert.pub: expected a file in an"),
    ("out-is-a-folder", ["--out", "."], {}, "--out .: expected a file in an existing folder"),
]


@pytest.mark.parametrize(("extra", "files", "needle"), [c[1:] for c in GRANT_CASES], ids=[c[0] for c in GRANT_CASES])
def test_bad_break_glass_input_is_one_line_with_exit_2(tmp_path, monkeypatch, capsys, extra, files, needle):
    from tests.fixtures.boot import write_inventory

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GOLDEN_INVENTORY", str(write_inventory(tmp_path / "inv.yml", {"node1": (
        "52:54:00:15:00:01", "base@prod")})))
    (tmp_path / "k.pub").write_text(PUBKEY)
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    host = extra[1] if extra[:1] == ["--host-override"] else "node1"
    extra = [] if extra[:1] == ["--host-override"] else extra
    argv = ["--home", str(tmp_path / "home"), "break-glass", host, "--reason", "INC-1", "--ttl", "1h",
            "--pubkey", "k.pub", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and needle in err[0], err
    # The verb opens the state before it reads the input (every case): the refusal left it empty.
    assert (tmp_path / "home" / "state.db").is_file() and _no_grants(tmp_path / "home")


def _no_grants(home) -> bool:
    from toolkit.state.db import SQLiteStateDB

    with SQLiteStateDB(home / "state.db").read() as repo:
        return repo.list_grants() == [] and repo.list_taints() == []


CONSOLE = ["console", "node1"]
CONSOLE_CASES: list[tuple[str, list[str], str]] = [
    ("no-terminal", CONSOLE, "golden console needs a terminal for an interactive session"),
    ("unknown-host", ["console", "node9", "--follow"], "host 'node9' is not in the inventory"),
    ("no-bmc", ["console", "nobmc", "--follow"], "host nobmc: bmc_address is not set"),
    ("escape-two-chars", [*CONSOLE, "--follow", "--escape", "~~"], "--escape must be one printable character"),
    ("escape-empty", [*CONSOLE, "--follow", "--escape", ""], "--escape must be one printable character"),
    ("escape-control", [*CONSOLE, "--follow", "--escape", "\x1d"], "--escape must be one printable character"),
    ("log-missing-folder", [*CONSOLE, "--log", "nowhere/c.log"], "--log nowhere/c.log: expected a file in an"),
    ("log-is-a-folder", [*CONSOLE, "--log", "."], "--log .: expected a file in an existing folder"),
    ("runs-host-without-show", ["runs", "--host", "node1"], "--host goes with 'runs show RUN'"),
    ("runs-show-unknown-run", ["runs", "show", "nope", "--host", "node1"], "no run 'nope'"),
]


@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in CONSOLE_CASES], ids=[c[0] for c in CONSOLE_CASES])
def test_bad_console_input_is_one_line_with_exit_2(tmp_path, monkeypatch, capsys, argv, needle):
    from tests.fixtures.boot import write_inventory

    monkeypatch.chdir(tmp_path)
    inv = write_inventory(tmp_path / "inv.yml", {"node1": ("52:54:00:15:00:01", "base@prod")})
    inv.write_text(inv.read_text() + '        nobmc:\n          mac: "52:54:00:15:00:02"\n')
    monkeypatch.setenv("GOLDEN_INVENTORY", str(inv))
    assert main(["--home", str(tmp_path / "home"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and needle in err[0], err
    # refused before any BMC was asked: no session, so nothing in the audit history and no taint
    if (tmp_path / "home" / "state.db").exists():
        from toolkit.state.db import SQLiteStateDB

        with SQLiteStateDB(tmp_path / "home" / "state.db").read() as repo:
            assert repo.list_audit() == [] and repo.list_taints() == []


def test_state_selectors_and_stale_policy_refusals_are_one_line(tmp_path, monkeypatch, capsys):
    from tests.fixtures.boot import write_inventory

    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "roles").mkdir()
    monkeypatch.setenv("GOLDEN_PROJECT", str(tmp_path))
    monkeypatch.setenv("GOLDEN_INVENTORY", str(write_inventory(tmp_path / "inv.yml", {"node1": (
        "52:54:00:15:00:01", "base@prod")})))
    home = ["--home", str(tmp_path / "home")]
    assert main([*home, "reimage", "--state", "tainted", "--yes"]) == 2
    assert "no host of 'all' is in state tainted" in capsys.readouterr().err
    assert main([*home, "fleet", "--stale"]) == 2
    assert "no staleness policy: golden.yaml has no stale: limits" in capsys.readouterr().err
    assert main([*home, "reimage", "--stale", "--yes"]) == 2
    assert "no staleness policy" in capsys.readouterr().err
    assert main([*home, "report", "--out", "nowhere/fleet.html"]) == 2
    assert "--out nowhere/fleet.html: expected a file in an existing folder" in capsys.readouterr().err
    assert main([*home, "report", "--out", "."]) == 2
    assert not (tmp_path / "nowhere").exists()
    for bad, needle in [("{max_age: 14 days}", "max_age must be a duration like 90s"),
                        ("{max_security_behind: -1}", ".stale.max_security_behind"),
                        ("{max_age: 14d, colour: red}", ".stale.colour: unknown key")]:
        (tmp_path / "golden.yaml").write_text(f"stale: {bad}\n")
        assert main([*home, "fleet", "--stale"]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
