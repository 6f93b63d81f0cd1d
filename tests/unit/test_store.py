"""The store: atomic commit, listing, per-image locks, mount-safe discard."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from toolkit.core.errors import LockedError, StoreError
from toolkit.core.mounts import mounts_under
from toolkit.image.manifest import Artifact, Manifest, read_manifest
from toolkit.store.artifacts import Store


def _manifest(image: str, build_id: str, created: str = "2026-01-01T00:00:00Z", **arts: bytes) -> Manifest:
    return Manifest(
        image=image, build_id=build_id, created_at=created, spec={"name": image}, inputs={},
        artifacts={n: Artifact(sha256=hashlib.sha256(b).hexdigest(), size=len(b)) for n, b in arts.items()},
        packages={"bash": "5.2"}, roles={}, tool_versions={}, dib_env={}, bake_seconds=1.0,
    )


def _stage(store: Store, image: str, build_id: str, created: str = "2026-01-01T00:00:00Z") -> Path:
    staged = store.stage(image)
    (staged / "vmlinuz").write_bytes(b"k")
    _manifest(image, build_id, created, vmlinuz=b"k").write(staged / "manifest.json")
    return staged


def test_commit_makes_the_build_appear(tmp_path):
    store = Store(tmp_path / "store")
    staged = _stage(store, "base", "aaaa")
    assert store.find("base", "aaaa") is None
    build = store.commit("base", "aaaa", staged)
    assert not staged.exists()
    assert build.path == tmp_path / "store" / "base" / "aaaa"
    assert build.artifact("vmlinuz").read_bytes() == b"k"
    assert store.get("base", "aaaa").manifest.packages == {"bash": "5.2"}
    assert store.images() == ["base"]


def test_staging_is_invisible(tmp_path):
    store = Store(tmp_path / "store")
    _stage(store, "base", "aaaa")
    assert store.images() == []
    assert store.builds("base") == []
    assert len(store.stale_staging("base")) == 1


def test_builds_newest_first(tmp_path):
    store = Store(tmp_path / "store")
    store.commit("base", "old1", _stage(store, "base", "old1", "2026-01-01T00:00:00Z"))
    store.commit("base", "new1", _stage(store, "base", "new1", "2026-02-01T00:00:00Z"))
    assert [b.build_id for b in store.builds("base")] == ["new1", "old1"]


def test_commit_refuses_a_mismatched_manifest(tmp_path):
    store = Store(tmp_path / "store")
    staged = _stage(store, "base", "aaaa")
    with pytest.raises(StoreError, match="manifest names base/aaaa"):
        store.commit("base", "bbbb", staged)
    assert store.find("base", "bbbb") is None


def test_commit_refuses_a_missing_artifact(tmp_path):
    store = Store(tmp_path / "store")
    staged = _stage(store, "base", "aaaa")
    (staged / "vmlinuz").unlink()
    with pytest.raises(StoreError, match="vmlinuz"):
        store.commit("base", "aaaa", staged)
    assert store.find("base", "aaaa") is None


def test_commit_never_replaces_a_stored_build(tmp_path):
    store = Store(tmp_path / "store")
    first = store.commit("base", "aaaa", _stage(store, "base", "aaaa", "2026-01-01T00:00:00Z"))
    before = {p.name: p.read_bytes() for p in first.path.iterdir() if p.is_file()}
    second = _stage(store, "base", "aaaa", "2026-03-01T00:00:00Z")
    with pytest.raises(StoreError, match="already stored, and stored builds never change"):
        store.commit("base", "aaaa", second)
    assert store.get("base", "aaaa").manifest.created_at == "2026-01-01T00:00:00Z"
    assert {p.name: p.read_bytes() for p in first.path.iterdir() if p.is_file()} == before


def test_get_unknown_build_names_the_fix(tmp_path):
    with pytest.raises(StoreError, match="no build base/nope") as info:
        Store(tmp_path).get("base", "nope")
    assert info.value.hint == "run: golden bake base"


def test_artifact_unknown(tmp_path):
    store = Store(tmp_path / "store")
    build = store.commit("base", "aaaa", _stage(store, "base", "aaaa"))
    with pytest.raises(StoreError, match="no artifact 'initrd'"):
        build.artifact("initrd")


def test_manifest_round_trip(tmp_path):
    m = _manifest("base", "aaaa", vmlinuz=b"k")
    m.write(tmp_path / "m.json")
    assert read_manifest(tmp_path / "m.json") == m
    assert '"schema": 1' in (tmp_path / "m.json").read_text()


def test_invalid_manifest_is_a_store_error(tmp_path):
    (tmp_path / "m.json").write_text('{"image": "x"}')
    with pytest.raises(StoreError, match="manifest is invalid"):
        read_manifest(tmp_path / "m.json")


def test_snapshot_stamp(tmp_path):
    store = Store(tmp_path / "store")
    assert store.snapshot("base") is None
    store.set_snapshot("base", "2026-01-01T00:00:00Z")
    assert store.snapshot("base") == "2026-01-01T00:00:00Z"
    assert store.images() == ["base"]  # the stamp lives in the image folder, invisible as a build
    assert store.builds("base") == []


def _hold_lock(root: str, image: str, ready, release) -> None:
    with Store(Path(root)).lock(image):
        ready.set()
        release.wait(10)


def test_lock_excludes_same_image_across_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(tmp_path), "base", ready, release))
    proc.start()
    try:
        assert ready.wait(10)
        store = Store(tmp_path)
        with pytest.raises(LockedError, match=rf"locked by bake pid {proc.pid}"):
            with store.lock("base"):
                pass
        with store.lock("web"):  # another image is not blocked
            pass
    finally:
        release.set()
        proc.join(10)
    with Store(tmp_path).lock("base"):  # released when the holder exits
        pass


def test_lock_released_when_holder_dies(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(tmp_path), "base", ready, release))
    proc.start()
    assert ready.wait(10)
    os.kill(proc.pid, 9)
    proc.join(10)
    deadline = time.monotonic() + 5
    while True:
        try:
            with Store(tmp_path).lock("base"):
                break
        except LockedError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_mounts_under_parses_and_orders(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "proc /proc proc rw 0 0\n"
        "tmpfs /s/.staging/x/work/tmp tmpfs rw 0 0\n"
        "proc /s/.staging/x/work/tmp/mnt/proc proc rw 0 0\n"
        "tmpfs /s/.staging/x/with\\040space tmpfs rw 0 0\n"
        "tmpfs /s/.staging/xy tmpfs rw 0 0\n"
    )
    found = mounts_under(Path("/s/.staging/x"), mounts)
    assert found[0] == "/s/.staging/x/work/tmp/mnt/proc"
    assert set(found) == {"/s/.staging/x/work/tmp", "/s/.staging/x/work/tmp/mnt/proc", "/s/.staging/x/with space"}


def test_discard_refuses_with_mounts_inside(tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    staged = store.stage("base")
    monkeypatch.setattr("toolkit.store.artifacts.mounts_under", lambda p: [str(p / "work/tmp/mnt/dev")])
    with pytest.raises(StoreError, match="mount"):
        store.discard(staged)
    assert staged.exists()
