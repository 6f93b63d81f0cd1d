"""Shared test configuration. Slow fixtures live in tests/fixtures/ and are cached by input hash.

Every ``golden`` command a test runs through ``subprocess.run`` is checked here: its captured stderr
must never hold a Python traceback (only ``--debug`` may show one). A test that expects a failure
still gets its one-line error; a traceback anywhere is a defect, whatever the test asserts.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from typing import Any

# Resolved inventories are cached; tests keep theirs out of the user's ~/.cache (xdist workers
# inherit the controller's folder, which the controller removes at exit).
if "GOLDEN_CACHE" not in os.environ:
    os.environ["GOLDEN_CACHE"] = tempfile.mkdtemp(prefix="golden-test-cache-")
    atexit.register(shutil.rmtree, os.environ["GOLDEN_CACHE"], True)

pytest_plugins = [
    "tests.fixtures.lab",
    "tests.fixtures.common",
    "tests.fixtures.boot",
    "tests.fixtures.chroot",
    "tests.fixtures.bake",
    "tests.fixtures.postgres",
]

_run = subprocess.run


def _is_golden(argv: Any) -> bool:
    if isinstance(argv, str | bytes) or not argv:
        return False
    words = [str(a) for a in argv]
    return any(w == "golden" or w.endswith("/golden") for w in words[:4]) and "--debug" not in words


def _checked_run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    result = _run(*args, **kwargs)
    argv = args[0] if args else kwargs.get("args")
    err = result.stderr
    if _is_golden(argv) and err:
        text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
        assert "Traceback (most recent call last)" not in text, f"traceback from {argv}:\n{text[-3000:]}"
    return result


subprocess.run = _checked_run  # type: ignore[assignment]
