"""Serial-over-LAN's pure parts: the escape sequence, tail bounding, console tails, the lab BMC's SOL
answers, error classification, the QEMU serial socket and the capture's bookkeeping."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from toolkit.bmc.base import BmcCommandError, BmcError, BmcUnreachableError, BmcUnsupportedError
from toolkit.bmc.endpoint import BmcEndpoint, BmcProtocol
from toolkit.bmc.sol import EscapeFilter, SolStream, classify_sol_error
from toolkit.core.secret import Secret
from toolkit.lab.qemu import VmSpec, console_socket_path, qemu_argv
from toolkit.lab.sol import SimConsole, SolBridge, activate_response, sol_parameter_response
from toolkit.rollout import consolecap
from toolkit.rollout.consolecap import ConsoleCapture
from toolkit.runs.console import TailBuffer, console_file, console_tail, printable_tail, save_tail

# (typed chunks, bytes sent, left): ~. only at a line start; ~~ is one ~; anything else passes
ESCAPES: list[tuple[list[bytes], bytes, bool]] = [
    ([b"ls\r"], b"ls\r", False),
    ([b"~."], b"", True),  # the very start of the session is a line start
    ([b"ls\r~."], b"ls\r", True),
    ([b"ls\n~."], b"ls\n", True),
    ([b"a~."], b"a~.", False),  # not at a line start: typed as is
    ([b"~~"], b"~", False),
    ([b"~~."], b"~.", False),  # the doubled ~ was sent, so '.' is just a dot
    ([b"~x"], b"~x", False),
    ([b"\r~", b"."], b"\r", True),  # the sequence split across reads
    ([b"\r~", b"q"], b"\r~q", False),
    ([b"~.rest"], b"", True),  # nothing after the escape is typed
    ([b"x\r", b"~", b"~", b"y"], b"x\r~y", False),
]


@pytest.mark.parametrize(("chunks", "sent", "left"), ESCAPES, ids=[repr(b"|".join(c[0])) for c in ESCAPES])
def test_escape_filter(chunks: list[bytes], sent: bytes, left: bool) -> None:
    f, out, quit_ = EscapeFilter(), b"", False
    for c in chunks:
        typed, quit_ = f.feed(c)
        out += typed
        if quit_:
            break
    assert (out, quit_) == (sent, left)


def test_escape_filter_with_another_character() -> None:
    f = EscapeFilter(b"&")
    assert f.feed(b"~.") == (b"~.", False)
    assert f.feed(b"\r&.") == (b"\r", True)


@pytest.mark.parametrize(("limit", "chunks", "kept", "dropped"), [
    (8, [b"abc", b"def"], b"abcdef", 0),
    (8, [b"abcdefgh"], b"abcdefgh", 0),
    (8, [b"abcdefgh", b"ij"], b"cdefghij", 2),
    (4, [b"0123456789"], b"6789", 6),
    (1, [b"a", b"b", b"c"], b"c", 2),
])
def test_tail_buffer_keeps_the_end(limit: int, chunks: list[bytes], kept: bytes, dropped: int) -> None:
    buf = TailBuffer(limit)
    for c in chunks:
        buf.add(c)
    assert (bytes(buf.data), buf.dropped) == (kept, dropped)
    head = f"[golden: {dropped} earlier bytes dropped]\n".encode() if dropped else b""
    assert buf.text() == head + kept


def test_tail_buffer_refuses_no_room() -> None:
    with pytest.raises(ValueError):
        TailBuffer(0)


def test_printable_tail_strips_terminal_control() -> None:
    raw = (b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)\r\n\r\niPXE 00:02.0\r"
           b"Booting from Hard Disk...\r\n\x1b[1;31mKernel panic\x1b[0m\x07\n\n")
    assert printable_tail(raw) == ["SeaBIOS (version 1.16)", "iPXE 00:02.0", "Booting from Hard Disk...",
                                   "Kernel panic"]
    assert printable_tail(raw, 2) == ["Booting from Hard Disk...", "Kernel panic"]
    assert printable_tail(raw, 0) == []
    assert printable_tail(b"\xff\xfe bad utf-8\n") == ["\ufffd\ufffd bad utf-8"]


def test_console_tail_takes_the_newest_attempt(tmp_path: Path) -> None:
    d = tmp_path / "runs" / "r1" / "console"
    d.mkdir(parents=True)
    for name, attempt, text in (("web1", 1, b"first\n"), ("web1", 2, b"second\n"), ("web10", 3, b"other\n")):
        buf = TailBuffer()
        buf.add(text)
        save_tail(console_file(d, name, attempt), buf)
    tail = console_tail(tmp_path / "runs", "r1", "web1")
    assert tail is not None and (tail.attempt, tail.lines) == (2, ("second",))
    assert console_tail(tmp_path / "runs", "r1", "web2") is None
    assert console_tail(tmp_path / "runs", "missing", "web1") is None


@pytest.mark.parametrize("host", ["../x", "a/b", "", "..", "x" * 201])
def test_console_file_refuses_names_unfit_for_a_file(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError):
        console_file(tmp_path, host, 1)


# (request data, completion code, response data) for Get SOL Configuration Parameters on port 16230 (0x3f66)
PARAMS: list[tuple[list[int], int, list[int]]] = [
    ([1, 1, 0, 0], 0, [0x11, 0x01]),  # enabled
    ([1, 0, 0, 0], 0, [0x11, 0x00]),
    ([1, 5, 0, 0], 0, [0x11, 0x0A]),  # 115.2 kbps
    ([1, 8, 0, 0], 0, [0x11, 0x66, 0x3F]),  # the port, least significant byte first
    ([0x81, 8, 0, 0], 0, [0x11]),  # revision only
    ([1, 9, 0, 0], 0x80, []),  # not supported
    ([1, 0xC0, 0, 0], 0x80, []),  # OEM
    ([1], 0xC7, []),  # too short
]


@pytest.mark.parametrize(("data", "code", "answer"), PARAMS, ids=[str(p[0]) for p in PARAMS])
def test_sol_configuration_answers(data: list[int], code: int, answer: list[int]) -> None:
    assert sol_parameter_response(data, 16230) == (code, answer)


def test_activate_response_names_the_port_lsb_first() -> None:
    # ipmitool compares bytes 8..9, read LSB first, with the port it talks to (pyghmi's server sends MSB first)
    assert activate_response(16230) == [0, 0, 0, 0, 0xFF, 0, 0xFF, 0, 0x66, 0x3F, 0xFF, 0xFF]


BMC = BmcEndpoint(name="web1", address="10.0.0.9", port=623, user="admin", password=Secret("hunter2"))
ERRORS: list[tuple[str, type[BmcError], str]] = [
    ("SOL Session active for another client", BmcError, "in use by another client"),
    ("Maximum SOL session count reached", BmcError, "in use by another client"),
    ("SOL is disabled", BmcUnsupportedError, "does not support Serial-over-LAN"),
    ("Connection lost", BmcUnreachableError, "the Serial-over-LAN session ended"),
    ("Remote IPMI console disconnected", BmcUnreachableError, "session ended"),
    ("timeout", BmcUnreachableError, "did not answer"),
    ("Incorrect password provided", BmcError, "rejected the login"),
    ("Invalid command", BmcUnsupportedError, "does not support"),
    ("something odd hunter2", BmcCommandError, "refused Serial-over-LAN (something odd ***)"),
]


@pytest.mark.parametrize(("text", "kind", "needle"), ERRORS, ids=[e[0] for e in ERRORS])
def test_sol_errors_are_typed_and_never_name_the_password(text: str, kind: type[BmcError], needle: str) -> None:
    err = classify_sol_error(BMC, text)
    assert isinstance(err, kind) and needle in err.message, err.message
    assert "hunter2" not in err.message + (err.hint or "")


def test_sol_is_ipmi_only() -> None:
    redfish = BmcEndpoint(name="web1", address="10.0.0.9", protocol=BmcProtocol.REDFISH, user="u",
                          password=Secret("p"))
    with pytest.raises(BmcUnsupportedError, match="golden's SOL is IPMI's"):
        SolStream(redfish)


def test_qemu_serial_on_a_socket_keeps_the_log(tmp_path: Path) -> None:
    vm = VmSpec(name="n1", mac="52:54:00:00:00:01", serial_log=tmp_path / "serial.log", console_socket=True)
    argv = qemu_argv(vm)
    chardev = argv[argv.index("-chardev") + 1]
    assert chardev == f"socket,id=ser0,path=console.sock,server=on,wait=off,logfile={tmp_path / 'serial.log'}"
    assert argv[argv.index("-serial") + 1] == "chardev:ser0"
    assert console_socket_path(vm) == tmp_path / "console.sock"
    plain = qemu_argv(VmSpec(name="n1", mac="52:54:00:00:00:01", serial_log=tmp_path / "s.log"))
    assert "-chardev" not in plain and plain[plain.index("-serial") + 1] == f"file:{tmp_path / 's.log'}"


def test_simulated_console_replays_its_backlog_and_echoes() -> None:
    console = SimConsole("lab-n01")
    console.say("power on, booting from network")
    sock = console.open()
    sock.settimeout(5)
    seen = b""
    while b"booting from network\r\n" not in seen:
        seen += sock.recv(4096)
    assert b"lab-n01 simulated console" in seen
    sock.sendall(b"hi\r")
    echoed = b""
    while b"hi\r\n" not in echoed:
        echoed += sock.recv(4096)
    sock.close()


def test_capture_bounds_its_sessions_and_sends_only_what_it_started(monkeypatch, tmp_path: Path) -> None:
    sent: list[dict[str, object]] = []
    cap = ConsoleCapture(tmp_path, limit=2)
    monkeypatch.setattr(cap, "_send", sent.append)
    for host in ("a", "b", "c"):
        cap.start(host, 1, BmcEndpoint(name=host, address="127.0.0.1", user="admin", password=Secret("pw")))
    cap.stop("c")  # never started: nothing to say
    cap.stop("a")
    cap.start("c", 1, BmcEndpoint(name="c", address="127.0.0.1", user="admin", password=Secret("pw")))
    assert [(m["op"], m["host"]) for m in sent] == [("start", "a"), ("start", "b"), ("stop", "a"), ("start", "c")]


def test_the_power_action_waits_for_captures_to_open_but_never_long(monkeypatch, tmp_path: Path) -> None:
    cap = ConsoleCapture(tmp_path)
    monkeypatch.setattr(cap, "_send", lambda message: None)
    for host in ("a", "b"):
        cap.start(host, 3, BmcEndpoint(name=host, address="127.0.0.1", user="admin", password=Secret("pw")))
    console_file(tmp_path, "a", 3).write_text("[golden: console capture started]")  # a's session is open
    began = time.monotonic()
    assert cap.wait_started([("a", 3), ("b", 3), ("never-started", 3)], timeout=0.5) == ["b"]
    assert 0.5 <= time.monotonic() - began < 2.0  # bounded: a capture never holds the reimage up for long
    console_file(tmp_path, "b", 3).write_text("[golden: console capture could not start: busy]")
    assert cap.wait_started([("a", 3), ("b", 3)], timeout=5) == []


def test_a_dead_capture_process_is_a_warning_not_a_failure(monkeypatch, tmp_path: Path, caplog) -> None:
    cap = ConsoleCapture(tmp_path)

    def boom() -> None:
        raise OSError("no such file")

    monkeypatch.setattr(cap, "_spawn", boom)
    cap.start("a", 1, BmcEndpoint(name="a", address="127.0.0.1", user="admin", password=Secret("pw")))
    cap.stop("a")
    cap.close()
    assert cap.broken and "the reimage goes on without consoles" in caplog.text


def test_a_stopped_capture_reads_on_for_its_grace(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(consolecap._Capture, "_run", lambda self: None)  # no BMC: only the bookkeeping
    c = consolecap._Capture(tmp_path, "web1", 1, BMC)
    assert c.running
    c.stop(grace=0.3)
    assert c.running
    c.stop(grace=5)  # a later, longer stop never extends the first
    time.sleep(0.35)
    assert not c.running


def test_a_bridge_follows_the_serial_log_across_a_restart(tmp_path: Path) -> None:
    """A QEMU machine's console is followed in its serial log: live from the session's start (what came
    before is not replayed), then a restarted QEMU's new file from its first byte, so a power cycle's
    first words arrive although the socket was gone while QEMU restarted."""
    log_file = tmp_path / "serial.log"
    log_file.write_bytes(b"before the session\n")
    got: list[bytes] = []

    def no_socket() -> socket.socket:
        raise OSError("QEMU restarting")

    bridge = SolBridge("n1", no_socket, got.append, log_file)
    try:
        time.sleep(0.3)
        with log_file.open("ab") as f:
            f.write(b"live line\n")
        _until(lambda: b"".join(got) == b"live line\n")
        log_file.unlink()  # what QemuMachine does before it starts QEMU again
        time.sleep(0.2)
        log_file.write_bytes(b"SeaBIOS\niPXE banner\n")
        _until(lambda: b"".join(got) == b"live line\nSeaBIOS\niPXE banner\n")
        bridge.write(b"typed while QEMU is away")  # lost, as on a real line; never an error
    finally:
        bridge.stop()
        bridge.thread.join(timeout=5)
    assert not bridge.thread.is_alive()


def _until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
