"""DIB command line and environment building, and reading DIB's output."""

from __future__ import annotations

from pathlib import Path

import yaml

from toolkit.bake.aptsources import Mirrors
from toolkit.bake.dib import (
    BLOCK_DEVICE_CONFIG,
    BakePaths,
    apt_sources_conf,
    dib_command,
    parse_failure,
    parse_phase,
    squashfs_command,
)
from toolkit.bake.plan import plan_bake
from toolkit.image.spec import ImageSpec

MIRRORS = Mirrors(main="http://mirror.invalid/debian", security="http://mirror.invalid/debian-security")


def _plan(tmp_path: Path, **extra):
    (tmp_path / "roles" / "r1" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "r1" / "tasks" / "main.yml").write_text("[]")
    spec = ImageSpec.model_validate({"name": "demo", "packages": ["curl", "iproute2"],
                                     "roles": [{"name": "r1"}], **extra})
    return plan_bake(spec, tmp_path / "roles", "3.43.0", "2026-01-01T00:00:00Z")


def test_dib_writes_a_raw_root_filesystem(tmp_path):
    inv = dib_command(_plan(tmp_path), BakePaths(tmp_path / "w"), MIRRORS, use_debootstrap_cache=False,
                      python="/venv/bin/python")
    argv = list(inv.argv)
    assert argv[0] == "/venv/bin/disk-image-create"
    types = [argv[i + 1] for i, a in enumerate(argv) if a == "-t"]
    assert types == ["raw"]  # we squash it ourselves (zstd), see squashfs_command
    assert argv[argv.index("-o") + 1] == str(tmp_path / "w" / "out" / "image")
    assert argv[argv.index("-p") + 1] == "curl,iproute2"
    assert argv[-3:] == ["--", "debian-minimal", "golden-netboot"]  # no element can be read as an option


def test_env_points_at_mirrors_and_caches(tmp_path):
    paths = BakePaths(tmp_path / "w")
    inv = dib_command(_plan(tmp_path), paths, MIRRORS, use_debootstrap_cache=True)
    env = inv.dib_env
    assert env["DIB_DISTRIBUTION_MIRROR"] == MIRRORS.main
    assert env["DIB_DEBIAN_SECURITY_MIRROR"] == MIRRORS.security
    assert f"security:deb {MIRRORS.security} bookworm-security main" in env["DIB_APT_SOURCES_CONF"]
    assert env["DIB_IMAGE_CACHE"] == str(paths.cache)
    assert env["DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE"] == "1"
    assert env["DIB_RELEASE"] == "bookworm"
    assert all(k.startswith("DIB_") for k in env)
    # plumbing for our hooks stays outside the DIB_* set (which reaches the chroot and the manifest)
    assert inv.host_env["TMP_DIR"] == str(paths.tmp)
    assert inv.host_env["ELEMENTS_PATH"].endswith("toolkit/bake/elements")
    assert "GOLDEN_HOOK_DIR" in inv.host_env and "GOLDEN_PYTHON" in inv.host_env


def test_no_debootstrap_cache_flag_when_cold(tmp_path):
    inv = dib_command(_plan(tmp_path), BakePaths(tmp_path / "w"), MIRRORS, use_debootstrap_cache=False)
    assert "DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE" not in inv.dib_env


def test_spec_dib_env_is_passed(tmp_path):
    plan = _plan(tmp_path, dib_env={"DIB_DEBIAN_COMPONENTS": "main,contrib"})
    inv = dib_command(plan, BakePaths(tmp_path / "w"), MIRRORS, use_debootstrap_cache=False)
    assert inv.dib_env["DIB_DEBIAN_COMPONENTS"] == "main,contrib"


def test_security_line_omitted_without_security_mirror():
    conf = apt_sources_conf(Mirrors(main="http://m.invalid/debian", security=None), "bookworm")
    assert "security" not in conf
    assert conf.splitlines()[0] == "default:deb http://m.invalid/debian bookworm main"


def test_block_device_config_has_no_partitions():
    config = yaml.safe_load(BLOCK_DEVICE_CONFIG)
    kinds = [next(iter(item)) for item in config]
    assert kinds == ["local_loop", "mkfs"]
    assert config[1]["mkfs"]["mount"]["mount_point"] == "/"


def test_fake_disk_image_create_receives_the_command(tmp_path):
    """A fake binary on PATH records what it was given, like osbuild's command tests."""
    from toolkit.core.run import run

    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "disk-image-create"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD"\nenv | grep "^DIB_RELEASE=" >> "$RECORD"\n')
    fake.chmod(0o755)
    inv = dib_command(_plan(tmp_path), BakePaths(tmp_path / "w"), MIRRORS, use_debootstrap_cache=False,
                      python=str(bindir / "python"))
    record = tmp_path / "record"
    run(inv.argv, env={**inv.env, "RECORD": str(record)})
    lines = record.read_text().splitlines()
    assert lines[:-1] == list(inv.argv[1:])
    assert lines[-1] == "DIB_RELEASE=bookworm"


def test_squashfs_command_uses_zstd_and_skips_kernel_filesystems(tmp_path):
    argv = squashfs_command(tmp_path / "mnt", tmp_path / "out.squashfs")
    assert argv[:3] == ["mksquashfs", str(tmp_path / "mnt"), str(tmp_path / "out.squashfs")]
    assert argv[argv.index("-comp") + 1] == "zstd"
    excluded = argv[argv.index("-e") + 1:]
    assert {"proc/*", "sys/*", "dev/*"} <= set(excluded)


def test_parse_phase():
    assert parse_phase("2026-11-26 21:17:54.103 | dib-run-parts Running /tmp/dib_build.x/hooks/root.d/08-debootstrap") \
        == "root.d/08-debootstrap"
    assert parse_phase("dib-run-parts Running /tmp/in_target.d/install.d/01-package-installs") \
        == "install.d/01-package-installs"
    assert parse_phase("2026-11-26 21:17:54.103 | Calculating image size (this may take a minute)...") \
        == "sizing the image"
    assert parse_phase("2026-11-26 21:17:54.103 | Unpacking sudo") is None


def test_parse_failure():
    line = "2026-11-26 21:17:54.103 | golden-step-failed: post-root.d/50-golden-roles: role x, task 'y': boom"
    assert parse_failure(line) == "post-root.d/50-golden-roles: role x, task 'y': boom"
    assert parse_failure("nothing here") is None


def test_dibs_own_getopt_reads_everything_after_double_dash_as_elements(tmp_path):
    """Run disk-image-create's getopt line (read from the installed script) on our argv."""
    import re
    import shutil
    import subprocess

    import diskimage_builder

    script = Path(diskimage_builder.__file__).parent / "lib" / "disk-image-create"
    m = re.search(r"getopt -o (\S+) -l (\S+) ", script.read_text())
    # DIB parses its options with util-linux getopt; if that line moves, this check must follow it
    assert m, f"no getopt line in {script}"
    assert shutil.which("getopt"), "getopt (util-linux) is what DIB itself runs"
    inv = dib_command(_plan(tmp_path), BakePaths(tmp_path / "w"), MIRRORS, use_debootstrap_cache=False)
    hostile = [*inv.argv[1:], "--help", "-o/tmp/evil"]  # as if validation had let them through
    out = subprocess.run(["getopt", "-o", m.group(1), "-l", m.group(2), "-n", "dib", "--", *hostile],
                         capture_output=True, text=True, check=True).stdout
    options, _, positional = out.partition(" -- ")
    assert "--help" not in options and "/tmp/evil" not in options
    assert positional.split() == ["'debian-minimal'", "'golden-netboot'", "'--help'", "'-o/tmp/evil'"]
