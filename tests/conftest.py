"""Shared test configuration. Slow fixtures live in tests/fixtures/ and are cached by input hash."""

pytest_plugins = [
    "tests.fixtures.lab",
    "tests.fixtures.common",
    "tests.fixtures.boot",
    "tests.fixtures.chroot",
    "tests.fixtures.bake",
    "tests.fixtures.postgres",
]
