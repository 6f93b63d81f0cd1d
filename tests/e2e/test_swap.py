"""Swap a live web tier without dropping a request: real haproxy, real playbooks, two QEMU lab machines.

The releases are the web image of tests/e2e/test_reimage.py (``rollout``): v1 is its release B
(baked once for both files), v2 a second release, v3 a release whose nginx answers 500 to every
request while its boot-stage checks (nginx enabled) pass: only a check of the service from
outside can tell. Everything runs inside the test's network namespace.
"""

from __future__ import annotations

from tests.e2e.test_reimage import SPEC, bake_release
from tests.fixtures.bake import bake_cached_project
from toolkit.store.artifacts import Build

BROKEN_SPEC = SPEC.replace("      web_port: {port}\n", "      web_port: {port}\n      web_status: 500\n").split(
    "  - name: http-ok")[0]


def bake_releases() -> dict[str, Build]:
    """v1, v2 (good) and v3 (answers 500), baked into the shared test store once per input hash."""
    return {"v1": bake_release("B", 80), "v2": bake_release("v2", 80),
            "v3": bake_cached_project("rollout-project-v3", "rollout", BROKEN_SPEC.format(rel="v3", port=80))}
