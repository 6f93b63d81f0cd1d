"""The pre-role root cache: its key, which hooks a bake from it still runs, the shadow elements,
the DIB environment it adds and the cache folder's upkeep."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from toolkit.bake.aptsources import Mirrors
from toolkit.bake.dib import BakePaths, dib_command
from toolkit.bake.plan import ELEMENTS_DIR, plan_bake
from toolkit.bake.rootcache import (
    CAPTURE_HOOK,
    RootCache,
    capture_command,
    capturing,
    from_cache,
    kept_hooks,
    pre_role_key,
    restore_command,
    shadow_elements,
)
from toolkit.core.errors import BakeError
from toolkit.image.spec import ImageSpec

MIRRORS = Mirrors(main="http://mirror.invalid/debian", security="http://mirror.invalid/debian-security")
BASE_SPEC = {
    "name": "demo",
    "packages": ["curl", "iproute2"],
    "roles": [{"name": "r1", "vars": {"a": 1}}],
    "checks": [{"name": "c1", "command": "true"}],
}


def _roles(tmp_path: Path, template: str = "x") -> Path:
    for role in ("r1", "r2"):
        (tmp_path / "roles" / role / "templates").mkdir(parents=True, exist_ok=True)
        (tmp_path / "roles" / role / "templates" / "t.j2").write_text(template)
    return tmp_path / "roles"


def _key(tmp_path: Path, *, spec: dict | None = None, template: str = "x", snapshot: str = "2026-01-01T00:00:00Z",
         dib_version: str = "3.43.0", work: str = "w", mirrors: Mirrors = MIRRORS, tarball: bool = True,
         rebuild: str = "") -> tuple[str, str]:
    plan = plan_bake(ImageSpec.model_validate(spec or BASE_SPEC), _roles(tmp_path, template), dib_version, snapshot,
                     rebuild=rebuild)
    inv = dib_command(plan, BakePaths(tmp_path / work), mirrors, use_debootstrap_cache=tarball)
    return pre_role_key(plan, inv), plan.build_id


SAME_ROOT = [  # what the roles do, or where a bake happens: same pre-role root, new build id or none
    ("role template", {"template": "changed"}, True),
    ("role vars", {"spec": {**BASE_SPEC, "roles": [{"name": "r1", "vars": {"a": 2}}]}}, True),
    ("another role", {"spec": {**BASE_SPEC, "roles": [{"name": "r1"}, {"name": "r2"}]}}, True),
    ("checks", {"spec": {**BASE_SPEC, "checks": []}}, True),
    ("description", {"spec": {**BASE_SPEC, "description": "other"}}, True),
    ("--force", {"rebuild": "20260101T000000.000000Z"}, True),
    ("work folder", {"work": "elsewhere"}, False),
    ("debootstrap tarball cached or not", {"tarball": False}, False),
]
NEW_ROOT = [  # what DIB does before the roles
    ("packages", {"spec": {**BASE_SPEC, "packages": ["curl"]}}),
    ("package order", {"spec": {**BASE_SPEC, "packages": ["iproute2", "curl"]}}),
    ("elements", {"spec": {**BASE_SPEC, "elements": ["cloud-init-datasources"]}}),
    ("release", {"spec": {**BASE_SPEC, "base": {"release": "trixie"}}}),
    ("spec dib_env", {"spec": {**BASE_SPEC, "dib_env": {"DIB_EXTRA": "1"}}}),
    ("mirror", {"mirrors": Mirrors(main="http://other.invalid/debian", security=MIRRORS.security)}),
    ("security mirror", {"mirrors": Mirrors(main=MIRRORS.main, security=None)}),
    ("package snapshot", {"snapshot": "2026-02-01T00:00:00Z"}),
    ("DIB version", {"dib_version": "3.44.0"}),
    ("image name", {"spec": {**BASE_SPEC, "name": "other"}}),
]


@pytest.mark.parametrize(("what", "change", "new_id"), SAME_ROOT, ids=[c[0] for c in SAME_ROOT])
def test_key_ignores_what_runs_after_the_capture(tmp_path, what, change, new_id):
    key, build_id = _key(tmp_path / "a")
    key2, build_id2 = _key(tmp_path / "b", **change)
    assert key2 == key, what
    assert (build_id2 != build_id) is new_id, what


@pytest.mark.parametrize(("what", "change"), NEW_ROOT, ids=[c[0] for c in NEW_ROOT])
def test_key_covers_what_dib_does_before_the_roles(tmp_path, what, change):
    assert _key(tmp_path / "b", **change)[0] != _key(tmp_path / "a")[0], what


def test_key_covers_the_bytes_of_our_elements(tmp_path):
    spec = ImageSpec.model_validate(BASE_SPEC)
    roles = _roles(tmp_path)
    project = tmp_path / "elements" / "site-extra" / "install.d"
    project.mkdir(parents=True)
    (project / "10-x").write_text("#!/bin/sh\n")
    keys = []
    for content in ("#!/bin/sh\n", "#!/bin/sh\necho changed\n"):
        (project / "10-x").write_text(content)
        plan = plan_bake(spec, roles, "3.43.0", "s", project_elements=tmp_path / "elements")
        keys.append(pre_role_key(plan, dib_command(plan, BakePaths(tmp_path / "w"), MIRRORS,
                                                   use_debootstrap_cache=True)))
    assert keys[0] != keys[1]


HOOKS = [
    ("root.d", ["08-debootstrap", "50-shared-apt-cache", "01-golden-restore-root", "75-x"],
     ["01-golden-restore-root", "50-shared-apt-cache"]),
    ("extra-data.d", ["20-manifest-dir"], []),
    ("pre-install.d", ["05-golden-defer-initramfs"], []),
    ("install.d", ["01-package-installs"], []),
    ("post-install.d", ["80-ssh-keygen"], []),
    # dib-run-parts order is ``sort -n``: by number first, so 100-x runs after the capture
    ("post-root.d", ["10-early", "49-a", CAPTURE_HOOK, "49-zz", "50-golden-roles", "100-late", "7-x"],
     ["49-zz", "50-golden-roles", "100-late"]),
    ("finalise.d", ["99-write-dpkg-manifest"], ["99-write-dpkg-manifest"]),
    ("cleanup.d", ["01-copy-manifests-dir", "99-extract-kernel-and-ramdisk"],
     ["01-copy-manifests-dir", "99-extract-kernel-and-ramdisk"]),
    ("environment.d", ["10-dpkg.bash"], ["10-dpkg.bash"]),
    ("block-device.d", ["10-x"], ["10-x"]),
]


@pytest.mark.parametrize(("phase", "names", "kept"), HOOKS, ids=[h[0] for h in HOOKS])
def test_kept_hooks(phase, names, kept):
    assert sorted(kept_hooks(phase, names)) == sorted(kept)


def test_shadow_elements_drop_the_pre_role_phases(tmp_path):
    project = tmp_path / "project-elements"
    hook = project / "site-extra" / "post-root.d"
    hook.mkdir(parents=True)
    for name in ("10-before-roles", "80-after-roles"):
        (hook / name).write_text("#!/bin/sh\n")
    (project / "site-extra" / "install.d").mkdir()
    (project / "site-extra" / "install.d" / "10-x").write_text("#!/bin/sh\n")
    (project / "site-extra" / "element-deps").write_text("dpkg\n")
    shadow = shadow_elements(("debian-minimal", "golden-netboot", "site-extra"), (ELEMENTS_DIR, project),
                             tmp_path / "shadow")
    names = {p.name for p in shadow.iterdir()}
    # DIB's "base" (added by disk-image-create itself) and every dependency, DIB's own included
    assert {"base", "debian-minimal", "debootstrap", "dpkg", "golden-netboot", "site-extra"} <= names
    for element in shadow.iterdir():
        for phase in ("extra-data.d", "pre-install.d", "install.d", "post-install.d"):
            assert not (element / phase).exists(), f"{element.name}/{phase}"
    assert sorted(os.listdir(shadow / "dpkg" / "root.d")) == ["50-shared-apt-cache"]
    assert sorted(os.listdir(shadow / "golden-netboot" / "root.d")) == ["01-golden-restore-root"]
    assert "50-golden-roles" in os.listdir(shadow / "golden-netboot" / "post-root.d")
    assert os.listdir(shadow / "site-extra" / "post-root.d") == ["80-after-roles"]
    assert (shadow / "dpkg" / "finalise.d" / "99-write-dpkg-manifest").is_file()
    assert (shadow / "site-extra" / "element-deps").read_text() == "dpkg\n"
    assert os.access(shadow / "golden-netboot" / "post-root.d" / "50-golden-roles", os.X_OK)


def test_shadow_of_an_unknown_element_is_a_bake_error(tmp_path):
    with pytest.raises(BakeError, match="no-such-element"):
        shadow_elements(("debian-minimal", "no-such-element"), (ELEMENTS_DIR,), tmp_path / "shadow")


def test_cache_plumbing_stays_out_of_the_dib_environment(tmp_path):
    plan = plan_bake(ImageSpec.model_validate(BASE_SPEC), _roles(tmp_path), "3.43.0", "s")
    inv = dib_command(plan, BakePaths(tmp_path / "w"), MIRRORS, use_debootstrap_cache=True)
    restored = from_cache(inv, tmp_path / "shadow", tmp_path / "k.tar.zst")
    captured = capturing(inv, tmp_path / "k.tar.zst")
    for other in (restored, captured):
        # the same command and DIB_* set (it is recorded in the image): only hook plumbing differs
        assert other.argv == inv.argv and other.dib_env == inv.dib_env
    assert restored.host_env["ELEMENTS_PATH"] == str(tmp_path / "shadow")
    assert restored.host_env["GOLDEN_ROOT_RESTORE"] == str(tmp_path / "k.tar.zst")
    assert captured.host_env["GOLDEN_ROOT_CAPTURE"] == str(tmp_path / "k.tar.zst")
    assert "GOLDEN_ROOT_CAPTURE" not in restored.host_env and "GOLDEN_ROOT_RESTORE" not in captured.host_env


def test_capture_and_restore_commands(tmp_path):
    cap = capture_command(tmp_path / "root", tmp_path / "mnt", tmp_path / "k.tmp")
    assert cap[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    tar = cap[cap.index(str(tmp_path / "mnt")) + 1:]
    assert tar[:2] == ["-C", str(tmp_path / "mnt")] and tar[-3:] == ["-cf", str(tmp_path / "k.tmp"), "."]
    assert "--numeric-owner" in tar and "--xattrs" in tar and "--acls" in tar
    res = restore_command(tmp_path / "k.tar.zst", tmp_path / "root")
    assert res[:3] == ["tar", "-C", str(tmp_path / "root")] and res[-2:] == ["-xf", str(tmp_path / "k.tar.zst")]
    assert "-p" in res and "--numeric-owner" in res


def _root(cache: RootCache, key: str, age: float) -> Path:
    path = cache.path(key)
    path.write_bytes(b"x")
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def test_prune_keeps_the_most_recently_used_and_those_in_use(tmp_path):
    cache = RootCache(tmp_path / "pre-role")
    cache.dir.mkdir()
    paths = {k: _root(cache, k, age) for k, age in (("a", 500), ("b", 400), ("c", 300), ("d", 200), ("e", 100))}
    lease = cache.lease("a")  # in use by a bake (and now the most recently used)
    assert lease is not None
    held = os.open(paths["b"], os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_SH)  # another bake restoring from b
    stale = cache.dir / ".f.tar.zst.123.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 3 * 3600,) * 2)
    fresh = cache.dir / ".g.tar.zst.124.tmp"  # a capture being written right now
    fresh.write_bytes(b"half")
    try:
        removed = cache.prune(keep=2)
    finally:
        lease.release()
        os.close(held)
    assert set(removed) == {paths["c"], paths["d"], stale}
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(
        [".g.tar.zst.124.tmp", "a.tar.zst", "b.tar.zst", "e.tar.zst"])


def test_lease_of_a_missing_root_is_none(tmp_path):
    assert RootCache(tmp_path / "nothing").lease("abc") is None
    assert RootCache(tmp_path / "nothing").prune() == []
