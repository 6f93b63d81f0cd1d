"""Shared test configuration. Slow fixtures live in tests/fixtures/ and are cached by input hash."""

import os
import tempfile

# Resolved inventories are cached; tests keep theirs out of the user's ~/.cache.
os.environ.setdefault("GOLDEN_CACHE", tempfile.mkdtemp(prefix="golden-test-cache-"))

pytest_plugins = [
    "tests.fixtures.lab",
    "tests.fixtures.common",
    "tests.fixtures.boot",
    "tests.fixtures.chroot",
    "tests.fixtures.bake",
]
