"""Role-only rebakes start from the cached pre-role root and give exactly a full bake's result.

In a copy of the project whose state home starts with the fixture's builds and package snapshot
(so its pre-role key is the fixture's, whose bake captured the root), a role template changes and
the image is rebaked: it must start from the cached root. A second home with the same snapshot
then bakes the same inputs with every DIB phase (``--no-root-cache``; a ``--force`` bake would get
its own id). Both must have the same build id, manifest packages and squashfs file listing.

What the listing compares: every path with its type and mode, owner, size and symlink target
(``unsquashfs -lln``). Not mtimes: files written during a bake carry the time they were written,
so no two bakes, full or not, share them (packaged files keep their .deb times in both). Not the
size of open-iscsi's initiator name, a random IQN its postinst writes on every install (two full
bakes differ there too), nor of the initrd that embeds it: the initrd's own files are compared
instead (path, mode, size, sha256), all but that name byte for byte.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.bake import bake_home
from tests.fixtures.common import ROOT, cache_root
from toolkit.bake.rootcache import RootCache
from toolkit.core.config import load_settings
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

GOLDEN = [sys.executable, "-c", "import sys; from toolkit.cli import main; sys.exit(main())"]
LISTING = re.compile(r"^(\S+) (\S+) +(\S+) \d{4}-\d\d-\d\d \d\d:\d\d (.*)$")
RANDOM_PER_INSTALL = ("/etc/iscsi/initiatorname.iscsi", "/etc/initiatorname.iscsi")  # see the docstring


def squashfs_listing(path: Path) -> list[str]:
    """``mode owner size path[ -> target]`` of every entry, mtimes left out (see the docstring)."""
    out = subprocess.run(["unsquashfs", "-lln", "-d", "", str(path)], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        m = LISTING.match(line)
        if m:
            mode, owner, size, name = m.groups()
            if name in RANDOM_PER_INSTALL or name.startswith("/boot/initrd.img-"):
                size = "*"
            rows.append(" ".join((mode, owner, size, name)))
    assert len(rows) > 10000, out[-2000:]
    return rows


def initrd_files(path: Path) -> dict[str, tuple[int, int, str]]:
    """``{name: (mode, size, sha256)}`` of a gzip-compressed newc initramfs (what ours are)."""
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b", f"{path} is not gzip-compressed"
    raw = gzip.decompress(data)
    files: dict[str, tuple[int, int, str]] = {}
    pos = 0
    while pos + 110 <= len(raw):
        assert raw[pos:pos + 6] == b"070701", f"bad cpio header at {pos}"
        field = [int(raw[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = field[1], field[6], field[11]
        name = raw[pos + 110:pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            break
        body = raw[pos:pos + size]
        pos = (pos + size + 3) & ~3
        files[name] = (mode, size, hashlib.sha256(body).hexdigest())
    assert len(files) > 500, len(files)
    return files


def _copy_project(dest: Path) -> Path:
    for part in ("images", "roles", "elements", "golden.yaml"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, symlinks=True)
        elif src.is_file():
            shutil.copy2(src, dest / part)
    return dest


def _seed(home: Path, image: str, src: Path, *, builds: bool) -> None:
    """The image's package-snapshot stamp from ``src`` (so the same pre-role key and build ids)
    and, with ``builds``, hard links of the builds stored there (read-only use), so unchanged
    inputs are a store hit."""
    dest = home / "store" / image
    dest.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name.startswith(".package-snapshot"):
            shutil.copy2(entry, dest / entry.name)
        elif builds and entry.is_dir() and (entry / "manifest.json").is_file():
            shutil.copytree(entry, dest / entry.name, copy_function=os.link)


def _cache() -> Path:
    """This test's GOLDEN_CACHE: kept across sessions (unlike the suite's), so the root captured
    once serves every later run until the fixture's inputs change."""
    return cache_root() / "root-cache-test"


def _bake(project: Path, home: Path, *args: str) -> dict:
    env = {**os.environ, "GOLDEN_HOME": str(home), "GOLDEN_CACHE": str(_cache())}
    res = subprocess.run(["nice", "-n", "10", *GOLDEN, "--project", str(project), "--json", "bake", "base", *args],
                         env=env, capture_output=True, text=True, timeout=3000)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout)


def test_role_only_rebake_equals_a_full_bake(tmp_path, baked_base):
    project = _copy_project(tmp_path / "project")
    # same length: the output path is recorded in the image (/etc/dib-manifests), so sizes must match
    home_a, home_b = tmp_path / "home-a", tmp_path / "home-b"
    _seed(home_a, "base", baked_base.path.parent, builds=True)
    cache = RootCache(_cache() / "pre-role")
    run_dirs = sorted((bake_home() / "runs").glob("*-bake-base-*"))
    fixture_key = None
    for run in reversed(run_dirs):  # the newest bake of the fixture's inputs says which root it captured
        inputs = json.loads((run / "inputs.json").read_text()) if (run / "inputs.json").is_file() else {}
        if inputs.get("build_id") == baked_base.build_id and "pre_role_root" in inputs:
            fixture_key = inputs["pre_role_root"]["key"]
            break
    session = RootCache(load_settings(project=ROOT, home=bake_home()).cache / "pre-role")
    if fixture_key and not cache.path(fixture_key).is_file() and session.path(fixture_key).is_file():
        # baked in this session: its root is in the suite's throwaway cache
        cache.dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.dir / f".{fixture_key}.tar.zst.{os.getpid()}.tmp"
        shutil.copyfile(session.path(fixture_key), tmp)
        tmp.replace(cache.path(fixture_key))
    if fixture_key is None or not cache.path(fixture_key).is_file():
        # The fixture's root is not cached on this machine (pruned, or baked elsewhere): capture it.
        first = _bake(project, home_a, "--force")
        assert first["pre_role_root"] is None
        captured = json.loads((home_a / "runs" / first["run_id"] / "inputs.json").read_text())["pre_role_root"]
        assert captured["restored"] is False and cache.path(captured["key"]).is_file(), captured
        fixture_key = captured["key"]
    template = project / "roles" / "hardening" / "templates" / "golden-hardening.conf.j2"
    template.write_text(template.read_text() + "# a role-only change\n")

    fast = _bake(project, home_a)
    assert fast["cache_hit"] is False and fast["pre_role_root"], fast
    key = fast["pre_role_root"]
    assert key == fixture_key  # a role-only change keeps the pre-role key: the root captured above
    record = home_a / "runs" / fast["run_id"]
    assert json.loads((record / "inputs.json").read_text())["pre_role_root"] == {"key": key, "restored": True}
    log = (record / "stdout").read_text(errors="replace")
    assert f"golden: from cached pre-role root {key}" in log
    for skipped in ("root.d/08-debootstrap", "pre-install.d/05-golden-defer-initramfs",
                    "install.d/01-package-installs", "install.d/00-up-to-date"):
        assert f"Running /tmp/in_target.d/{skipped}" not in log and f"hooks/{skipped}" not in log, skipped
    for ran in ("post-root.d/50-golden-roles", "post-root.d/60-golden-initramfs", "post-root.d/70-golden-checks",
                "finalise.d/99-write-dpkg-manifest", "cleanup.d/99-extract-kernel-and-ramdisk"):
        assert ran in log, ran

    _seed(home_b, "base", home_a / "store" / "base", builds=False)
    full = _bake(project, home_b, "--no-root-cache")
    assert full["pre_role_root"] is None and full["cache_hit"] is False
    full_log = (home_b / "runs" / full["run_id"] / "stdout").read_text(errors="replace")
    assert "root.d/08-debootstrap" in full_log and "from cached pre-role root" not in full_log

    assert fast["build_id"] == full["build_id"]
    a = Store(home_a / "store").get("base", fast["build_id"])
    b = Store(home_b / "store").get("base", full["build_id"])
    assert a.manifest.inputs == b.manifest.inputs and a.manifest.roles == b.manifest.roles
    assert a.manifest.packages == b.manifest.packages
    assert a.manifest.package_archives == b.manifest.package_archives
    assert a.manifest.checks == b.manifest.checks
    listing_a = squashfs_listing(a.artifact("rootfs.squashfs"))
    listing_b = squashfs_listing(b.artifact("rootfs.squashfs"))
    only_a, only_b = sorted(set(listing_a) - set(listing_b)), sorted(set(listing_b) - set(listing_a))
    assert (only_a, only_b) == ([], []), f"cached root only: {only_a[:20]}\nfull bake only: {only_b[:20]}"
    files_a, files_b = initrd_files(a.artifact("initrd")), initrd_files(b.artifact("initrd"))
    assert set(files_a) == set(files_b)
    differ = sorted(n for n in files_a if files_a[n] != files_b[n])
    assert all("/" + n in RANDOM_PER_INSTALL for n in differ), differ
    # the change itself is in both images
    out = tmp_path / "extract"
    subprocess.run(["unsquashfs", "-q", "-d", str(out), str(a.artifact("rootfs.squashfs")),
                    "etc/ssh/sshd_config.d"], check=True, capture_output=True)
    assert any("# a role-only change" in p.read_text() for p in (out / "etc/ssh/sshd_config.d").iterdir())
