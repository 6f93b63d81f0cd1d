"""Channels: named pointers (``base@dev``, ``base@prod``) to exact build ids, with an audit history.

Every change is planned by a pure function from the channel's current state and history, then
applied inside one write transaction (BEGIN IMMEDIATE) that re-reads that state first. Two
racing commands therefore queue: the second plans against what the first wrote, and every
history row's ``from_build`` is the previous row's ``to_build``.

Rollback treats a channel's history as a stack: publish and promote push a build, rollback
pops one. Rolling back twice walks two steps back instead of toggling between two builds.

Gates: a build that has not passed its checks is not promoted, nor published to a channel that
hosts follow, unless ``--force --reason`` says why (recorded as forced in the history). Before
either, the build's signature is checked against the home's trusted keys and its artifacts against
its manifest (``Store.verify``; no override for a bad signature, ``allow_unsigned`` for none).
The overview lives in ``overview``, retention in ``gc``.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from toolkit.core.errors import GateError, InputError, StoreError
from toolkit.image.ref import IMAGE_NAME_RE, REF_RE, parse_image_ref
from toolkit.state.db import HistoryRow, Repo, StateDB
from toolkit.store.artifacts import Build, Store
from toolkit.store.policy import LAB_BOOT, ChannelGates, GateEvidence, missing_gates

NAME_RE = IMAGE_NAME_RE
LATEST = "latest-bake"

class ChannelError(InputError):
    """A channel operation cannot be done as asked (unknown build, empty channel, unchecked build)."""


@dataclass(frozen=True)
class ChannelChange:
    """A planned channel change: which channel, from which build to which, by whom and why."""
    image: str
    channel: str
    action: str  # publish | promote | rollback
    from_build: str | None
    to_build: str
    user: str
    reason: str = ""
    forced: bool = False

    @property
    def changed(self) -> bool:
        """True when the channel would point elsewhere."""
        return self.from_build != self.to_build


@dataclass(frozen=True)
class ChangeResult:
    """A channel change as carried out."""
    change: ChannelChange
    applied: bool  # False when the channel already pointed at the build (nothing recorded)
    history_id: int | None
    at: float


def current_user() -> str:
    """Who is acting: the human behind sudo when there is one."""
    return os.environ.get("GOLDEN_USER") or os.environ.get("SUDO_USER") or getpass.getuser()


def check_name(kind: str, value: str) -> str:
    """``value``; ChannelError unless it is a valid image or channel name."""
    if not NAME_RE.match(value):
        raise ChannelError(f"{kind} {value!r} is not a valid name (lowercase letters, digits, '-' and '_')")
    return value


# ---- pure planning ----

def rollback_stack(history: Sequence[HistoryRow]) -> list[str]:
    """The builds a channel went through, oldest first, with rolled-back builds popped off."""
    stack: list[str] = []
    for row in history:
        if row.action == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != row.to_build:
                stack.append(row.to_build)
        elif not stack or stack[-1] != row.to_build:
            stack.append(row.to_build)
    return stack


def rollback_target(history: Sequence[HistoryRow]) -> str | None:
    """The build before the channel's current one, or None."""
    stack = rollback_stack(history)
    return stack[-2] if len(stack) >= 2 else None


def unpassed_checks(build: Build) -> list[str]:
    """Names of the build's checks that did not pass; ``["(no checks recorded)"]`` for an unchecked build."""
    checks = build.manifest.checks
    if not checks:
        return ["(no checks recorded)"]
    return sorted(name for name, result in checks.items() if not result.passed)


def check_gate(image: str, build: Build, where: str, force: bool, reason: str) -> bool:
    """Whether ``build`` may go ``where``: True when it is forced past failing checks; GateError when refused."""
    if force and not reason.strip():
        raise ChannelError("--force needs --reason saying why the checks are overridden")
    failing = unpassed_checks(build)
    if failing and not force:
        raise GateError(
            f"refused by the checks gate: build {image}/{build.build_id} has not passed its checks "
            f"({', '.join(failing)}); not {where}",
            hint="fix and bake again, or override with --force --reason '...' (recorded in the audit history)",
        )
    return bool(force and failing)


def plan_publish(image: str, channel: str, build: Build, current: str | None, user: str,
                 reason: str = "", *, followers: Sequence[str] = (), force: bool = False) -> ChannelChange:
    """Point ``channel`` at ``build``; the checks gate applies when hosts follow the channel."""
    forced = False
    if followers:
        shown = ", ".join(list(followers)[:3]) + (" ..." if len(followers) > 3 else "")
        forced = check_gate(image, build, f"publishing it to {channel}, which {len(followers)} host(s) follow "
                                          f"({shown})", force, reason)
    elif force and not reason.strip():
        raise ChannelError("--force needs --reason saying why the checks are overridden")
    return ChannelChange(image, channel, "publish", current, build.build_id, user, reason.strip(), forced=forced)


def plan_promote(image: str, src: str, dst: str, source_build: Build | None, current: str | None, user: str,
                 force: bool = False, reason: str = "") -> ChannelChange:
    """The change that moves ``src``'s build to ``dst``; ChannelError when it may not."""
    if src == dst:
        raise ChannelError(f"--from and --to are both {src!r}; promote moves a build between two channels")
    if source_build is None:
        raise ChannelError(f"channel {image}@{src} points at no build",
                           hint=f"golden publish {image} <build> --channel {src}")
    forced = check_gate(image, source_build, f"promoting it to {dst}", force, reason)
    return ChannelChange(image, dst, "promote", current, source_build.build_id, user, reason.strip(), forced=forced)


def plan_rollback(image: str, channel: str, history: Sequence[HistoryRow], current: str | None,
                  user: str, reason: str = "") -> ChannelChange:
    """The change that puts the channel back on its previous build; ChannelError when there is none."""
    if current is None:
        raise ChannelError(f"channel {image}@{channel} points at no build; there is nothing to roll back")
    target = rollback_target(history)
    if target is None:
        raise ChannelError(f"channel {image}@{channel} has no previous build to roll back to")
    return ChannelChange(image, channel, "rollback", current, target, user, reason)


# ---- acting ----

def _apply(repo: Repo, change: ChannelChange) -> ChangeResult:
    at = time.time()
    if not change.changed:
        return ChangeResult(change, False, None, at)
    repo.set_channel(change.image, change.channel, change.to_build, at)
    hid = repo.append_history(change.image, change.channel, change.action, change.from_build, change.to_build,
                              change.user, at, change.reason, change.forced)
    return ChangeResult(change, True, hid, at)


def _current(repo: Repo, image: str, channel: str) -> str | None:
    row = repo.get_channel(image, channel)
    return row.build_id if row else None


def resolve_build(store: Store, image: str, ref: str) -> Build:
    """A build id, or ``latest-bake`` for the newest build of ``image`` in the store."""
    check_name("image", image)
    if ref == LATEST:
        builds = store.builds(image)
        if not builds:
            raise ChannelError(f"image {image!r} has no builds in {store.root}", hint=f"golden bake {image}")
        return builds[0]
    if not REF_RE.match(ref):
        raise ChannelError(f"{ref!r} is not a build id (or {LATEST})")
    build = store.find(image, ref)
    if build is None:
        known = ", ".join(b.build_id for b in store.builds(image)[:5]) or "none"
        raise ChannelError(f"no build {image}/{ref} in the store (newest: {known})")
    return build


def publish(db: StateDB, store: Store, image: str, ref: str, channel: str, *, user: str | None = None,
            reason: str = "", followers: Sequence[str] = (), force: bool = False,
            allow_unsigned: bool = False) -> ChangeResult:
    """``followers``: the hosts whose inventory image follows ``image@channel`` (they arm the checks gate)."""
    check_name("channel", channel)
    who = user or current_user()
    # Hashing the artifacts takes seconds: done before the write lock, which boot servers wait on.
    checked = resolve_build(store, image, ref)
    store.verify(checked, allow_unsigned=allow_unsigned, artifacts=True)
    with db.write() as repo:
        # Resolved again under the write lock: gc deletes builds while holding it too.
        build = resolve_build(store, image, checked.build_id)
        store.verify(build, allow_unsigned=allow_unsigned)
        change = plan_publish(image, channel, build, _current(repo, image, channel), who, reason,
                              followers=followers, force=force)
        return _apply(repo, change)


def _policy_forced(repo: Repo, image: str, build: Build, dst: str, gates: ChannelGates | None, force: bool,
                   reason: str) -> bool:
    """Whether the promotion gates of ``dst`` are overridden; GateError naming every missing gate."""
    if gates is None:
        return False
    evidence = GateEvidence(repo.gate_passed(image, build.build_id, LAB_BOOT),
                            repo.count_soaked_hosts(build.build_id, time.time() - gates.soak))
    missing = missing_gates(gates, evidence)
    if missing and not force:
        raise GateError(f"refused by the promotion gates of {dst}: build {image}/{build.build_id} has "
                        f"{'; '.join(missing)}", hint="wait for the evidence, or --force --reason '...' (audited)")
    return bool(missing)


def _check_outside_lock(db: StateDB, store: Store, image: str, channel: str, allow_unsigned: bool) -> str | None:
    """The build ``channel`` points at now, its signature and artifacts checked (hashing takes seconds: not
    under the write lock); None when the channel or the build is not there (the locked path says so)."""
    build_id = channel_build(db, image, channel)
    build = store.find(image, build_id) if build_id else None
    if build is None:
        return None
    store.verify(build, allow_unsigned=allow_unsigned, artifacts=True)
    return build.build_id


def promote(db: StateDB, store: Store, image: str, src: str, dst: str, *, force: bool = False, reason: str = "",
            user: str | None = None, policy: dict[str, ChannelGates] | None = None,
            allow_unsigned: bool = False) -> ChangeResult:
    """``policy``: the promotion gates per target channel (``golden.yaml`` ``promotion:``)."""
    check_name("image", image)
    check_name("channel", src)
    check_name("channel", dst)
    who = user or current_user()
    checked = _check_outside_lock(db, store, image, src, allow_unsigned)
    with db.write() as repo:
        src_id = _current(repo, image, src)
        source = None
        if src_id is not None:
            source = store.find(image, src_id)
            if source is None:
                raise StoreError(f"channel {image}@{src} points at build {src_id}, which is not in the store")
            store.verify(source, allow_unsigned=allow_unsigned, artifacts=source.build_id != checked)
        change = plan_promote(image, src, dst, source, _current(repo, image, dst), who, force, reason)
        if source is not None and _policy_forced(repo, image, source, dst, (policy or {}).get(dst), force, reason):
            change = dataclasses.replace(change, forced=True)
        return _apply(repo, change)


def rollback(db: StateDB, store: Store, image: str, channel: str, *, reason: str = "",
             user: str | None = None) -> ChangeResult:
    """Put the channel back on its previous build, recorded in its history."""
    check_name("image", image)
    check_name("channel", channel)
    who = user or current_user()
    with db.write() as repo:
        change = plan_rollback(image, channel, repo.history(image, channel), _current(repo, image, channel),
                               who, reason)
        target = store.find(image, change.to_build)
        if target is None:
            raise StoreError(f"cannot roll {image}@{channel} back to {change.to_build}: "
                             "that build is gone from the store")
        store.verify(target)  # the signature only: a rollback is urgent, and golden serve would refuse it anyway
        return _apply(repo, change)


def history(db: StateDB, image: str | None = None, channel: str | None = None) -> list[HistoryRow]:
    """Channel changes in order, filtered by image and channel."""
    with db.read() as repo:
        return repo.history(image, channel)


def channel_build(db: StateDB, image: str, channel: str) -> str | None:
    """The build the channel points at, or None."""
    with db.read() as repo:
        return _current(repo, image, channel)


def resolve_ref(db: StateDB, store: Store, ref: str) -> Build:
    """``name@channel``, ``name@build-id`` or a bare build id (searched in every image) to a stored build."""
    if "@" in ref:
        parsed = parse_image_ref(ref, "build reference")
        build_id = channel_build(db, parsed.image, parsed.ref) or parsed.ref
        build = store.find(parsed.image, build_id)
        if build is None:
            raise ChannelError(f"{ref}: no channel {parsed.ref!r} and no build {parsed.image}/{parsed.ref} "
                               "in the store", hint="see: golden images")
        return build
    if not REF_RE.match(ref):
        raise ChannelError(f"{ref!r} is not a build reference (name@channel, name@build-id or a build id)")
    found = [b for image in store.images() if (b := store.find(image, ref)) is not None]
    if len(found) != 1:
        raise ChannelError(f"build id {ref!r} {'is in no image' if not found else 'is in several images'}",
                           hint="write it as <image>@<build-id>")
    return found[0]
