"""Serial-over-LAN for the lab's virtual BMCs: the IPMI answers (pure) and the bridge to a machine's console.

A QEMU machine's serial port is a unix socket (``VmSpec.console_socket``); a simulated machine has a
small generated console (a socket pair it writes its power events to). While a SOL session is
active, a SolBridge thread reads the machine's console into a bounded queue, and the BMC's own loop
(the one thread that runs pyghmi) hands it to pyghmi's ServerConsole (``SolBmc.pump_sol``): pyghmi's
sessions are not thread-safe, and a bridge thread sending on them left two captured BMCs silent.
Whatever the SOL client types goes back into the console. QEMU restarts on a power cycle and its
socket with it: the bridge reconnects until the session ends.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyghmi.ipmi import console as pyghmi_console

log = logging.getLogger("golden.vbmc")

# Get SOL Configuration Parameters (IPMI 2.0 table 26-5): parameter revision 1.1
SOL_PARAM_REVISION = 0x11
_PARAM_NOT_SUPPORTED = 0x80
_BAUD_115200 = 0x0A
_PRIV_ADMIN = 0x04
# bytes of console data per SOL packet each way: an SOL acknowledgement counts them in one byte, so
# pyghmi's server default of 256 makes its own client (and any strict one) fail on a full packet
MAX_PAYLOAD = 255
RECONNECT_S = 0.5
_READ = 4096
_UNIX_PATH_MAX = 107
SOL_STALE_S = 60.0  # an SOL owner silent this long (clients keep alive every 15-30 s) is gone
_NETFN_APP, _NETFN_TRANSPORT = 6, 0x0C
_CMD_ACTIVATION_STATUS, _CMD_INSTANCE_INFO, _CMD_SOL_CONFIG = 0x4A, 0x4B, 0x22
BACKLOG = 20  # lines a simulated console replays to a new connection
# console bytes held for the BMC loop: beyond this the oldest are lost (a UART overrun, never a stall)
MAX_QUEUED = 64 * 1024


def sol_parameter(selector: int, port: int) -> list[int] | None:
    """The data of SOL configuration parameter ``selector`` (None: not supported). Pure."""
    params: dict[int, list[int]] = {
        0: [0x00],  # set in progress: set complete
        1: [0x01],  # SOL enabled
        2: [_PRIV_ADMIN],  # no forced encryption or authentication; privilege: administrator
        3: [12, 96],  # character accumulate interval (5 ms units), send threshold (characters)
        4: [7, 50],  # retry count, retry interval (10 ms units)
        5: [_BAUD_115200],  # non-volatile bit rate
        6: [_BAUD_115200],  # volatile bit rate
        7: [0x01],  # payload channel: the LAN channel
        8: [port & 0xFF, port >> 8],  # payload port, least significant byte first
    }
    return params.get(selector)


def sol_parameter_response(data: list[int] | bytes, port: int) -> tuple[int, list[int]]:
    """(completion code, response data) for a Get SOL Configuration Parameters request. Pure."""
    if len(data) < 2:
        return 0xC7, []  # request data length invalid
    if data[0] & 0x80:  # "get parameter revision only"
        return 0, [SOL_PARAM_REVISION]
    value = sol_parameter(data[1], port)
    if value is None:
        return _PARAM_NOT_SUPPORTED, []
    return 0, [SOL_PARAM_REVISION, *value]


def activate_response(port: int) -> list[int]:
    """Activate Payload's answer: MAX_PAYLOAD bytes each way, the SOL port LSB first, no VLAN. Pure.

    (pyghmi's server sends the port most significant byte first, which ipmitool reads as another port.)
    """
    size = [MAX_PAYLOAD & 0xFF, MAX_PAYLOAD >> 8]
    return [0, 0, 0, 0, *size, *size, port & 0xFF, port >> 8, 0xFF, 0xFF]


def connect_unix(path: Path) -> socket.socket:
    """A stream connection to the unix socket at ``path``, also when the path is longer than a
    socket address allows (through the folder's descriptor in /proc/self/fd)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) <= _UNIX_PATH_MAX:
            sock.connect(str(path))
            return sock
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            sock.connect(f"/proc/self/fd/{dirfd}/{path.name}")
        finally:
            os.close(dirfd)
        return sock
    except OSError:
        sock.close()
        raise


class SimConsole:
    """A simulated machine's serial console: generated lines (its power events), echo of what is typed.

    A new connection first gets the last BACKLOG lines, as BMCs that keep an SOL history replay it:
    a session opened a moment after a power action still shows that boot."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._peers: list[socket.socket] = []
        self._lock = threading.Lock()
        self._backlog: collections.deque[str] = collections.deque(maxlen=BACKLOG)

    def open(self) -> socket.socket:
        """A new connection to the console; it starts with a banner and the backlog."""
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        with self._lock:
            self._peers.append(ours)
            backlog = "".join(self._backlog)
        threading.Thread(target=self._echo, args=(ours,), daemon=True, name=f"simcons-{self.name}").start()
        self._send(ours, f"\r\n{self.name} simulated console (golden lab)\r\n{backlog}")
        return theirs

    def say(self, text: str) -> None:
        """A line on every open connection, kept in the backlog."""
        line = f"[{time.strftime('%H:%M:%S')}] {self.name}: {text}\r\n"
        with self._lock:
            peers = list(self._peers)
            self._backlog.append(line)
        for peer in peers:
            self._send(peer, line)

    def _send(self, peer: socket.socket, text: str) -> None:
        try:
            peer.send(text.encode())
        except OSError:  # full or closed: a slow reader loses lines, like a UART overrun
            pass

    def _echo(self, peer: socket.socket) -> None:
        peer.setblocking(True)
        try:
            while data := peer.recv(_READ):
                peer.send(data.replace(b"\r", b"\r\n"))
        except OSError:
            pass
        finally:
            with self._lock:
                if peer in self._peers:
                    self._peers.remove(peer)
            peer.close()


class SolBridge:
    """Pumps a machine's console into ``deliver`` until stopped; ``write`` sends typed bytes back.

    With ``log`` (a QEMU machine's serial log) the output is followed in that file, not read from the
    socket: QEMU writes every byte there whether a client is connected or not, and starts a new file
    when it restarts (QemuMachine unlinks the old one), so a power cycle's first words (firmware,
    iPXE's banner) reach the session although the socket is gone while QEMU restarts. The socket then
    only carries typed input (what QEMU echoes on it is drained and dropped)."""

    def __init__(self, name: str, opener: Callable[[], socket.socket], deliver: Callable[[bytes], None],
                 log: Path | None = None) -> None:
        self.name = name
        self.opener = opener
        self.deliver = deliver
        self.log = log
        self.running = True
        self.sock: socket.socket | None = None
        self.thread = threading.Thread(target=self._pump if log is None else self._follow, daemon=True,
                                       name=f"sol-{name}")
        self.thread.start()

    def write(self, data: bytes) -> None:
        """Typed bytes to the machine (lost while its console is not there, as on a real line)."""
        sock = self.sock
        if sock is None and self.log is not None:
            with contextlib.suppress(OSError):
                sock = self.sock = self.opener()
        if sock is not None:
            try:
                sock.sendall(data)
            except OSError:
                if self.log is not None:
                    self.sock = None  # QEMU restarted: connect again on the next keystroke

    def stop(self) -> None:
        """End the pump and close the console connection."""
        self.running = False
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _pump(self) -> None:
        while self.running:
            try:
                self.sock = self.opener()
            except OSError:  # QEMU is (re)starting or the machine is off: try again shortly
                time.sleep(RECONNECT_S)
                continue
            self._read(self.sock)

    def _read(self, sock: socket.socket) -> None:
        try:
            while self.running and (data := sock.recv(_READ)):
                self.deliver(data)
        except OSError:
            pass
        except Exception:  # pyghmi failing to send must not kill the pump silently
            log.exception("%s: SOL delivery failed", self.name)
        sock.close()
        if self.running:
            time.sleep(RECONNECT_S)  # QEMU exited (reset, power off): wait for the next one

    def _follow(self) -> None:
        """Deliver what QEMU appends to its serial log: live from the session's start, then each new
        boot's file from its first byte."""
        assert self.log is not None
        f, inode, first = None, None, True
        try:
            while self.running:
                if f is None:
                    f, inode = _open_log(self.log, at_end=first)
                    if f is None:
                        self._drain(RECONNECT_S / 5)
                        continue
                    first = False
                data = f.read(_READ)
                if data:
                    self.deliver(data)
                elif _replaced(self.log, inode):
                    f.close()
                    f = None  # QEMU started again: its new file, from the top
                else:
                    self._drain(0.05)
        finally:
            if f is not None:
                f.close()

    def _drain(self, seconds: float) -> None:
        """Wait ``seconds``, reading and dropping what QEMU echoes on the input socket (it must not fill)."""
        sock = self.sock
        if sock is None:
            time.sleep(seconds)
            return
        try:
            if select.select([sock], [], [], seconds)[0] and not sock.recv(_READ):
                self.sock = None
                sock.close()
        except (OSError, ValueError):
            self.sock = None


def _open_log(path: Path, *, at_end: bool) -> tuple[Any, int | None]:
    """The serial log open for reading (at its end, or its start) and its inode; (None, None) while absent."""
    try:
        f = open(path, "rb")  # kept open while the session follows it
    except FileNotFoundError:
        return None, None
    if at_end:
        f.seek(0, os.SEEK_END)
    return f, os.fstat(f.fileno()).st_ino


def _replaced(path: Path, inode: int | None) -> bool:
    """Whether ``path`` is now another file (or none) than the one open with ``inode``."""
    try:
        return os.stat(path).st_ino != inode
    except FileNotFoundError:
        return True


class _LabConsole(pyghmi_console.ServerConsole):
    """pyghmi's BMC-side SOL console, telling the BMC when its client was last heard."""

    def __init__(self, session: Any, iohandler: Callable[[Any], None], on_packet: Callable[[], None]) -> None:
        self.on_packet = on_packet
        super().__init__(session, iohandler)
        self.maxoutcount = MAX_PAYLOAD

    def _got_sol_payload(self, payload: Any) -> None:
        self.on_packet()
        super()._got_sol_payload(payload)


class SolBmc:
    """The SOL half of a lab BMC (mixed into toolkit.lab.vbmc.VirtualBmc before pyghmi's Bmc): one
    session per BMC, its console bridged to the machine's (``machine.open_console()``).
    A session whose client went silent for SOL_STALE_S (killed without deactivating) is taken over."""

    name: str
    port: int
    machine: Any
    activated: bool = False
    sol: Any = None
    sol_owner: Any = None
    sol_heard = 0.0
    bridge: SolBridge | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._queued = bytearray()
        self._sol_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def is_active(self) -> bool:
        """SOL is enabled on every lab BMC (pyghmi asks before activating)."""
        return True

    def iohandler(self, data: Any) -> None:
        """pyghmi's Bmc insists on one; the console of each session gets its own (_sol_input)."""
        self._sol_input(self.sol_owner, data)

    def _sol_input(self, session: Any, data: Any) -> None:
        """What the SOL client typed (bytes) goes to the machine; an error (a dict) ends the session."""
        if session is not self.sol_owner:
            return  # a console that was already replaced, finishing its last retries
        if isinstance(data, dict):
            log.info("%s: SOL session ended: %s", self.name, data.get("error", data))
            self._end_sol()
        elif self.bridge is not None:
            self.bridge.write(bytes(data))

    def _heard(self) -> None:
        self.sol_heard = time.monotonic()

    def _deliver(self, data: bytes) -> None:
        """The bridge thread's side: queue console bytes for pump_sol (never touches pyghmi)."""
        with self._sol_lock:
            self._queued += data
            if len(self._queued) > MAX_QUEUED:
                del self._queued[:len(self._queued) - MAX_QUEUED]

    def pump_sol(self) -> None:
        """The BMC loop's side: send the queued console bytes on the SOL session (pyghmi splits them into
        packets and waits for each acknowledgement in this same loop)."""
        if not self._queued:
            return
        with self._sol_lock:
            data = bytes(self._queued)
            self._queued.clear()
        sol = self.sol
        if sol is not None:
            sol.send_data(data)

    def _end_sol(self) -> None:
        bridge, self.bridge = self.bridge, None
        if bridge is not None:
            bridge.stop()
        if self.sol is not None:
            self.sol.close()
        self.activated, self.sol, self.sol_owner = False, None, None

    def session_closed(self, session: Any) -> None:
        """A closed session's SOL ends with it."""
        if session is self.sol_owner:
            self._end_sol()

    def activate_payload(self, request: Any, session: Any) -> None:
        """Start SOL on this session: the bridge to the machine's console (see the module docstring)."""
        if self.activated and session is not self.sol_owner and time.monotonic() - self.sol_heard > SOL_STALE_S:
            log.info("%s: SOL owner silent for %.0f s; taking over", self.name, time.monotonic() - self.sol_heard)
            self._end_sol()
        if self.activated:
            session.send_ipmi_response(code=0x80)  # payload already active on another session
            return
        self.activated, self.sol_owner = True, session
        with self._sol_lock:
            self._queued.clear()
        self._heard()
        session.send_ipmi_response(data=activate_response(self.port))
        self.sol = _LabConsole(session, lambda data: self._sol_input(session, data), self._heard)
        self.bridge = SolBridge(self.name, self.machine.open_console, self._deliver, self.machine.console_log())
        log.info("%s: SOL activated", self.name)

    def deactivate_payload(self, request: Any, session: Any) -> None:
        """End SOL (pyghmi's answer), and the bridge with it."""
        was = self.activated
        super().deactivate_payload(request, session)  # type: ignore[misc]
        if was:
            self._end_sol()
            log.info("%s: SOL deactivated", self.name)

    def _sol_request(self, request: dict[str, Any], session: Any) -> bool:
        """Answer the SOL commands pyghmi's server lacks; False for any other request."""
        netfn, command, data = request["netfn"], request["command"], list(request.get("data") or [])
        if session is self.sol_owner:
            self._heard()
        if netfn == _NETFN_TRANSPORT and command == _CMD_SOL_CONFIG:
            code, answer = sol_parameter_response(data, self.port)
            session.send_ipmi_response(code=code, data=answer)
        elif netfn == _NETFN_APP and command == _CMD_ACTIVATION_STATUS:
            session.send_ipmi_response(data=[1, 1 if self.activated else 0, 0])
        elif netfn == _NETFN_APP and command == _CMD_INSTANCE_INFO:
            owner = list(self.sol_owner.managedsessionid) if self.activated and self.sol_owner else [0] * 4
            session.send_ipmi_response(data=owner + [0] * 8)
        else:
            return False
        return True
