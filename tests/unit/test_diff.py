"""Build diffs from recorded manifests, and Debian version order checked against dpkg itself."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from toolkit.bake.origins import installed, origins, suite_of
from toolkit.image.debversion import compare_versions
from toolkit.image.diff import Change, diff_manifests, diff_packages
from toolkit.image.manifest import Manifest

VERSIONS = [  # (a, b): a sorts before b
    ("1.0", "1.1"), ("1.0~rc1", "1.0"), ("1.0", "1.0+deb12u1"), ("2.36.1-8", "2.36.1-8+deb12u1"),
    ("2.0", "1:1.0"), ("3.0.11-1~deb12u2", "3.0.11-1~deb12u3"), ("3.0.11-1~deb12u2", "3.0.11-1"),
    ("1.2.3", "1.2.10"), ("1.2a", "1.2b"), ("1.2", "1.2a"), ("0.9-1", "0.10-1"),
    ("252.30-1~deb12u2", "252.31-1~deb12u1"), ("7.88.1-10+deb12u5", "7.88.1-10+deb12u8"), ("1.0-1", "1.0-1.1"),
    ("1.0~~", "1.0~"), ("a", "b"), ("1.0-2", "1.0-10"), ("1.2-3-4", "1.2-3-5"),
]


@pytest.mark.parametrize("a, b", VERSIONS)
def test_debian_version_order(a: str, b: str) -> None:
    assert compare_versions(a, b) < 0 < compare_versions(b, a)
    assert compare_versions(a, a) == 0


def test_version_order_agrees_with_dpkg() -> None:
    assert shutil.which("dpkg"), "dpkg is the peer; every Debian build host has it"
    for a, b in VERSIONS + [(b, a) for a, b in VERSIONS] + [("1.0", "1.0"), ("1:0", "0:1")]:
        ours = compare_versions(a, b)
        theirs = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
        assert (ours < 0) == theirs, (a, b)


def test_package_diff_table() -> None:
    old = {"bash": "5.2.15-2+b2", "curl": "7.88.1-10+deb12u5", "gone": "1.0-1", "libfoo": "2.0-1", "same": "1"}
    new = {"bash": "5.2.15-2+b2", "curl": "7.88.1-10+deb12u8", "libfoo": "1.9-1", "nginx": "1.22.1-9", "same": "1"}
    archives = {"curl": "bookworm-security", "libfoo": "bookworm", "nginx": "bookworm", "bash": "bookworm"}
    changes = diff_packages(old, new, archives, {"gone": "bookworm"})
    assert [(c.package, c.change, c.old, c.new, c.archive, c.security) for c in changes] == [
        ("curl", Change.UPGRADED, "7.88.1-10+deb12u5", "7.88.1-10+deb12u8", "bookworm-security", True),  # first
        ("gone", Change.REMOVED, "1.0-1", None, "bookworm", False),
        ("libfoo", Change.DOWNGRADED, "2.0-1", "1.9-1", "bookworm", False),
        ("nginx", Change.ADDED, None, "1.22.1-9", "bookworm", False),
    ]


def _manifest(build: str, packages: dict[str, str], archives: dict[str, str], roles: dict[str, str],
              spec: dict[str, object]) -> Manifest:
    return Manifest(image="base", build_id=build, created_at="2026-12-01T00:00:00Z", spec=spec,
                    inputs={"snapshot": build, "roles": roles}, artifacts={}, packages=packages, roles=roles,
                    tool_versions={}, dib_env={}, bake_seconds=1.0, package_archives=archives)


def test_manifest_diff_names_roles_spec_and_security_updates() -> None:
    a = _manifest("a", {"openssl": "3.0.11-1~deb12u2"}, {"openssl": "bookworm"}, {"web": "h1", "old": "h0"},
                  {"name": "base", "packages": []})
    b = _manifest("b", {"openssl": "3.0.15-1~deb12u1", "vim": "2:9.0.1378-2"},
                  {"openssl": "bookworm-security", "vim": "bookworm"}, {"web": "h2", "new": "h3"},
                  {"name": "base", "packages": ["vim"]})
    d = diff_manifests(a, b)
    assert [p.package for p in d.security_updates] == ["openssl"]
    assert [(r.role, r.change) for r in d.roles] == [("new", "added"), ("old", "removed"), ("web", "changed")]
    assert d.spec == ("packages",) and d.inputs == ("snapshot",) and not d.empty


STATUS = """\
Package: bash
Status: install ok installed
Version: 5.2.15-2+b7

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: openssl
Status: install ok installed
Version: 3.0.15-1~deb12u1
Description: a multi-line
 field continues here

Package: mytool
Status: install ok installed
Version: 0.1
"""


def test_package_origins_from_apt_lists() -> None:
    lists = {
        "mirror_debian_dists_bookworm_main_binary-amd64_Packages":
            "Package: bash\nVersion: 5.2.15-2+b7\n\nPackage: openssl\nVersion: 3.0.11-1~deb12u2\n",
        "mirror_debian-security_dists_bookworm-security_main_binary-amd64_Packages":
            "Package: openssl\nVersion: 3.0.15-1~deb12u1\n\nPackage: bash\nVersion: 5.2.15-2+b7\n",
        "mirror_debian_dists_bookworm_main_i18n_Translation-en": "Package: bash\n",
    }
    assert installed(STATUS) == {"bash": "5.2.15-2+b7", "openssl": "3.0.15-1~deb12u1", "mytool": "0.1"}
    assert origins(installed(STATUS), lists) == {
        "bash": "bookworm-security",  # offered by both: the security suite wins
        "mytool": "local",
        "openssl": "bookworm-security",
    }
    assert suite_of("x_dists_bookworm-updates_main_binary-amd64_Packages") == "bookworm-updates"
    assert suite_of("x_dists_bookworm_main_i18n_Translation-en") is None


def test_golden_diff_cli_resolves_channels_and_ids(tmp_path, capsys) -> None:
    import json

    from toolkit.cli import main
    from toolkit.state.db import SQLiteStateDB
    from toolkit.store import channels
    from toolkit.store.artifacts import Store

    store = Store(tmp_path / "home" / "store")
    for m in (_manifest("aaaa", {"openssl": "3.0.11-1~deb12u2"}, {"openssl": "bookworm"}, {}, {"name": "base"}),
              _manifest("bbbb", {"openssl": "3.0.15-1~deb12u1", "vim": "2:9.0.1378-2"},
                        {"openssl": "bookworm-security", "vim": "bookworm"}, {}, {"name": "base"})):
        staged = store.stage("base")
        m.write(staged / "manifest.json")
        store.commit("base", m.build_id, staged)
    channels.publish(SQLiteStateDB(tmp_path / "home" / "state.db"), store, "base", "aaaa", "prod", user="t")
    home = ["--home", str(tmp_path / "home")]
    assert main([*home, "diff", "base@prod", "bbbb", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["security_updates"] == 1
    assert [(p["package"], p["change"], p["old"], p["new"], p["archive"], p["security"]) for p in out["packages"]] == [
        ("openssl", "upgraded", "3.0.11-1~deb12u2", "3.0.15-1~deb12u1", "bookworm-security", True),
        ("vim", "added", None, "2:9.0.1378-2", "bookworm", False),
    ]
    assert main([*home, "diff", "base@nope", "bbbb"]) == 2
    assert "no channel 'nope'" in capsys.readouterr().err
