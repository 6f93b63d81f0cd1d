"""Role-only rebakes start from the cached pre-role root and give exactly a full bake's result.

In a copy of the project whose state home starts with the fixture's builds and package snapshot
(so its pre-role key is the fixture's, whose bake captured the root), a role template changes and
the image is rebaked: it must start from the cached root. A second home with the same snapshot
then bakes the same inputs with every DIB phase (``--no-root-cache``; a ``--force`` bake would get
its own id). Both must have the same build id, manifest packages and squashfs file listing.

What the listing compares: every path with its type and mode, owner, size and symlink target
(``unsquashfs -lln``). Not mtimes: files written during a bake carry the time they were written,
so no two bakes, full or not, share them (packaged files keep their .deb times in both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.bake import bake_home
from tests.fixtures.common import ROOT
from toolkit.bake.rootcache import RootCache
from toolkit.core.config import load_settings
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

GOLDEN = [sys.executable, "-c", "import sys; from toolkit.cli import main; sys.exit(main())"]
LISTING = re.compile(r"^(\S+) (\S+) +(\S+) \d{4}-\d\d-\d\d \d\d:\d\d (.*)$")


def squashfs_listing(path: Path) -> list[str]:
    """``mode owner size path[ -> target]`` of every entry, mtimes left out (see the docstring)."""
    out = subprocess.run(["unsquashfs", "-lln", "-d", "", str(path)], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        m = LISTING.match(line)
        if m:
            rows.append(" ".join(m.groups()))
    assert len(rows) > 10000, out[-2000:]
    return rows


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


def _bake(project: Path, home: Path, *args: str) -> dict:
    env = {**os.environ, "GOLDEN_HOME": str(home)}
    res = subprocess.run(["nice", "-n", "10", *GOLDEN, "--project", str(project), "--json", "bake", "base", *args],
                         env=env, capture_output=True, text=True, timeout=3000)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout)


def test_role_only_rebake_equals_a_full_bake(tmp_path, baked_base):
    project = _copy_project(tmp_path / "project")
    # same length: the output path is recorded in the image (/etc/dib-manifests), so sizes must match
    home_a, home_b = tmp_path / "home-a", tmp_path / "home-b"
    _seed(home_a, "base", baked_base.path.parent, builds=True)
    settings = load_settings(project=project, home=home_a)
    cache = RootCache(settings.cache / "pre-role")
    run_dirs = sorted((bake_home() / "runs").glob("*-bake-base-*"))
    fixture_key = None
    for run in reversed(run_dirs):  # the newest bake of the fixture's inputs says which root it captured
        inputs = json.loads((run / "inputs.json").read_text()) if (run / "inputs.json").is_file() else {}
        if inputs.get("build_id") == baked_base.build_id and "pre_role_root" in inputs:
            fixture_key = inputs["pre_role_root"]["key"]
            break
    if fixture_key is None or not cache.path(fixture_key).is_file():
        # The fixture's root is not cached on this machine (pruned, or baked elsewhere): capture it.
        first = _bake(project, home_a, "--force")
        assert first["pre_role_root"] is None
    template = project / "roles" / "hardening" / "templates" / "golden-hardening.conf.j2"
    template.write_text(template.read_text() + "# a role-only change\n")

    fast = _bake(project, home_a)
    assert fast["cache_hit"] is False and fast["pre_role_root"], fast
    key = fast["pre_role_root"]
    assert fixture_key in (None, key)
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
    # the change itself is in both images
    out = tmp_path / "extract"
    subprocess.run(["unsquashfs", "-q", "-d", str(out), str(a.artifact("rootfs.squashfs")),
                    "etc/ssh/sshd_config.d"], check=True, capture_output=True)
    assert any("# a role-only change" in p.read_text() for p in (out / "etc/ssh/sshd_config.d").iterdir())
