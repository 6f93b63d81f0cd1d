"""The states a host can be in, as ``golden fleet`` shows them: one definition for choices and checks."""

from __future__ import annotations

from enum import StrEnum


class HostState(StrEnum):
    """Where a host stands against its desired build."""
    IN_SYNC = "in-sync"  # runs its desired build and reports no drift
    PENDING = "pending"  # reports a build other than its desired one
    DRIFTED = "drifted"  # runs its desired build but changed outside the allowlist
    TAINTED = "tainted"  # someone logged in (break-glass or not): untrusted until reimaged
    DRAINED = "drained"  # out of rotation: a reimage holds it out, or a failure left it out (see why)
    FAILED = "failed"  # its last reimage step failed
    FELL_BACK = "fell-back"  # a disk host's desired build failed its boot: the boot counter went back to the other slot
    STALE = "stale"  # breaks the staleness policy (too old, too far behind, lacks security updates)
    NEVER_REPORTED = "never-reported"  # has a desired build, never reported
    NO_BUILD = "no-build"  # no desired build: no image named, or its channel/build is missing
    CLEANING = "cleaning"  # golden retire took it: never given a build until its clean ends and is cleared
    CLEAN = "clean"  # retired: every local disk erased and verified (the report is in the audit history)
    CLEAN_FAILED = "clean-failed"  # a retire did not verify every disk: never given a build until cleared


# States in which a host must never be given a build (reimage, publish, the boot server), until cleared.
NO_BUILD_STATES = frozenset({HostState.CLEANING, HostState.CLEAN_FAILED})


# Not a state but a mark beside it (a host can be in-sync and have new hardware): selectable like one.
HW_CHANGED = "hw-changed"
