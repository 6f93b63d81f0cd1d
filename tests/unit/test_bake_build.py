"""Pure pieces of the bake executor: dpkg manifest parsing, mirrors, log tails, phase tracking."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.bake.aptsources import AptSource
from toolkit.bake.dibbuild import _log_tail, _Watch, parse_dpkg_manifest, resolve_mirrors
from toolkit.core.config import Settings
from toolkit.core.errors import BakeError, InputError
from toolkit.image.spec import ImageSpec

# What dpkg/finalise.d/99-write-dpkg-manifest leaves after its sed.
DPKG_MANIFEST = """{"packages": [
{"package": "adduser","arch": "all","version": "3.134","status": "ii "},
    {"package": "bash","arch": "amd64","version": "5.2.15-2+b7","status": "ii "},
    {"package": "oldpkg","arch": "amd64","version": "1.0","status": "rc "}
]}
"""


def test_parse_dpkg_manifest(tmp_path):
    path = tmp_path / "m"
    path.write_text(DPKG_MANIFEST)
    assert parse_dpkg_manifest(path) == {"adduser": "3.134", "bash": "5.2.15-2+b7"}


def test_parse_dpkg_manifest_errors(tmp_path):
    with pytest.raises(BakeError, match="no dpkg manifest"):
        parse_dpkg_manifest(tmp_path / "missing")
    (tmp_path / "bad").write_text("{")
    with pytest.raises(BakeError, match="not valid JSON"):
        parse_dpkg_manifest(tmp_path / "bad")


def _settings(tmp_path: Path, **kw) -> Settings:
    return Settings(project=tmp_path, home=tmp_path / "home", cache=tmp_path / "cache", **kw)


def test_mirrors_spec_beats_config_beats_host(tmp_path, monkeypatch):
    host = [AptSource("http://host.invalid/debian", "bookworm", ("main",)),
            AptSource("http://host.invalid/debian-security", "bookworm-security", ("main",))]
    monkeypatch.setattr("toolkit.bake.aptsources.host_sources", lambda *a, **k: host)
    plain = ImageSpec.model_validate({"name": "x"})
    assert resolve_mirrors(plain, _settings(tmp_path)).main == "http://host.invalid/debian"
    assert resolve_mirrors(plain, _settings(tmp_path)).security == "http://host.invalid/debian-security"
    cfg = _settings(tmp_path, mirror="http://cfg.invalid/debian")
    assert resolve_mirrors(plain, cfg).main == "http://cfg.invalid/debian"
    assert resolve_mirrors(plain, cfg).security == "http://host.invalid/debian-security"
    spec = ImageSpec.model_validate({"name": "x", "base": {"mirror": "http://spec.invalid/debian",
                                                           "security_mirror": "http://spec.invalid/sec"}})
    m = resolve_mirrors(spec, cfg)
    assert (m.main, m.security) == ("http://spec.invalid/debian", "http://spec.invalid/sec")


def test_no_mirror_anywhere_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.setattr("toolkit.bake.aptsources.host_sources", lambda *a, **k: [])
    with pytest.raises(InputError, match="no package mirror"):
        resolve_mirrors(ImageSpec.model_validate({"name": "x"}), _settings(tmp_path))


@pytest.mark.parametrize("key", ["mirror", "security_mirror"])
def test_configured_mirror_is_checked_like_the_spec(tmp_path, key):
    bad = _settings(tmp_path, **{key: "http://cfg.invalid/debian\ndeb http://evil.invalid/ x main"})
    with pytest.raises(InputError, match=f"golden.yaml {key} .*no whitespace"):
        resolve_mirrors(ImageSpec.model_validate({"name": "x"}), bad)


def test_tail_drops_environment_tracing(tmp_path):
    log = tmp_path / "log"
    log.write_text(
        "2026-11-26 21:22:49.923 | dib-run-parts Running /x/post-root.d/50-golden-roles\n"
        "2026-11-26 21:22:49.923 | dib-run-parts Sourcing environment file /x/environment.d/10-dpkg.bash\n"
        "2026-11-26 21:22:49.923 | ++ export DIB_ADD_APT_KEYS=\n"
        "2026-11-26 21:22:50.318 | ERROR: something broke\n"
    )
    assert _log_tail(log) == "dib-run-parts Running /x/post-root.d/50-golden-roles\nERROR: something broke"


def test_watch_tracks_phases_and_first_failure():
    w = _Watch()
    w.on_line("2026-11-26 21:22:49.923 | dib-run-parts Running /x/hooks/root.d/08-debootstrap")
    assert w.phase == "root.d/08-debootstrap" and not w.past("root.d/08-debootstrap")
    w.on_line("dib-run-parts Running /x/hooks/root.d/10-next")
    assert w.past("root.d/08-debootstrap")
    w.on_line("golden-step-failed: post-root.d/50-golden-roles: role a, task 'b': boom")
    w.on_line("golden-step-failed: later")
    assert w.failure == "post-root.d/50-golden-roles: role a, task 'b': boom"


def test_runtime_directories_of_enabled_services(tmp_path):
    from toolkit.bake.checks import command_argv, runtime_directories

    lib = tmp_path / "lib" / "systemd" / "system"
    lib.mkdir(parents=True)
    (lib / "ssh.service").write_text("[Service]\nRuntimeDirectory=sshd\nRuntimeDirectoryMode=0755\n")
    (lib / "other.service").write_text("[Service]\nRuntimeDirectory=other a/b ../evil\n")
    (lib / "disabled.service").write_text("[Service]\nRuntimeDirectory=nope\n")
    wants = tmp_path / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "ssh.service").symlink_to("/lib/systemd/system/ssh.service")
    (wants / "other.service").symlink_to("/lib/systemd/system/other.service")
    assert runtime_directories(tmp_path) == ["a/b", "other", "sshd"]
    argv = command_argv(tmp_path, "true")
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert argv[-5:] == [str(tmp_path), "true", "a/b", "other", "sshd"]


def test_concurrent_bakes_get_different_apt_cache_slots(tmp_path):
    """apt locks its archive folder: two bakes must never bind-mount the same one."""
    import os

    from toolkit.bake.dibbuild import _lease_apt_slot

    first, fd1 = _lease_apt_slot(tmp_path)
    second, fd2 = _lease_apt_slot(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    os.close(fd1)
    again, fd3 = _lease_apt_slot(tmp_path)
    assert again == first  # a released slot is reused, so caches stay warm
    os.close(fd2)
    os.close(fd3)
