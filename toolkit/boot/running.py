"""Running a boot server: in the foreground until interrupted (``golden serve``), or on a thread (tests, embedding)."""

from __future__ import annotations

import sys
import threading

from toolkit.boot.server import BootHTTPServer


def serve_forever(server: BootHTTPServer) -> None:
    """Serve (and prune) until interrupted; then drain (in-flight transfers get ``limits.drain_s``) and close."""
    pruner = server.start_pruner()
    # A /boot hops between threads and releases the GIL on every SQLite call and socket write; with
    # dozens of transfers running, the default 5 ms switch interval turns each hop into a wait.
    sys.setswitchinterval(0.0005)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        if pruner is not None:
            pruner.stop()
        try:
            server.drain()
        finally:
            server.server_close()


def start_in_thread(server: BootHTTPServer) -> threading.Thread:
    """For tests and embedding: serve on a daemon thread; stop with server.shutdown()."""
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    return t


