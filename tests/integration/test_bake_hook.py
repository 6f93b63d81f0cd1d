"""The bake-time hook against a real debootstrapped chroot: roles through ansible-runner and the
community.general.chroot connection, failures named by role and task, checks, no Ansible left over.

This is the step DIB runs from post-root.d; testing it on the shared test chroot takes seconds
where a full bake takes minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.common import ROOT

pytestmark = pytest.mark.integration


def _roles(tmp_path: Path) -> Path:
    roles = tmp_path / "roles"
    (roles / "marker" / "tasks").mkdir(parents=True)
    (roles / "marker" / "tasks" / "main.yml").write_text(
        "---\n- name: write the marker\n  ansible.builtin.copy:\n    dest: /etc/golden-marker\n"
        "    content: \"{{ marker_text }}\\n\"\n    mode: '0644'\n"
    )
    (roles / "second" / "tasks").mkdir(parents=True)
    (roles / "second" / "tasks" / "main.yml").write_text(
        "---\n- name: append after the first role\n"
        "  ansible.builtin.shell: cat /etc/golden-marker > /etc/golden-second\n"
    )
    (roles / "boom" / "tasks").mkdir(parents=True)
    (roles / "boom" / "tasks" / "main.yml").write_text(
        "---\n- name: fine\n  ansible.builtin.meta: noop\n"
        "- name: explode on purpose\n  ansible.builtin.command: /bin/false\n"
    )
    return roles


def _hook(step: str, target: Path, hook_dir: Path) -> subprocess.CompletedProcess[str]:
    # The environment DIB gives its hooks: minimal, LC_ALL=C.
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
           "PYTHONPATH": str(ROOT), "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run([sys.executable, "-m", "toolkit.bake.hook", step, "--target", str(target),
                           "--hook-dir", str(hook_dir)], env=env, capture_output=True, text=True, timeout=600)


def _plan(hook_dir: Path, roles_dir: Path, roles: list[dict], checks: list[dict]) -> None:
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "plan.json").write_text(json.dumps({"roles_dir": str(roles_dir), "roles": roles, "checks": checks}))


def test_roles_run_in_order_with_vars_and_leave_no_ansible(chroot_workdir, tmp_path):
    hook = tmp_path / "hook"
    _plan(hook, _roles(tmp_path), [{"name": "marker", "vars": {"marker_text": "from-vars"}}, {"name": "second"}],
          [{"name": "marker-file", "file": "/etc/golden-second"},
           {"name": "marker-text", "command": "grep -qx from-vars /etc/golden-marker"},
           {"name": "ssh-enabled", "unit_enabled": "ssh.service"}])
    res = _hook("roles", chroot_workdir, hook)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (chroot_workdir / "etc" / "golden-second").read_text() == "from-vars\n"
    assert json.loads((hook / "roles.json").read_text()) == {"marker": "ok", "second": "ok"}
    assert not (chroot_workdir / "root" / ".ansible").exists()
    assert not (chroot_workdir / "tmp" / ".golden-ansible").exists()
    assert list((hook / "ansible" / "artifacts").iterdir()), "ansible-runner keeps its artifacts for the log"

    res = _hook("checks", chroot_workdir, hook)
    assert res.returncode == 0, res.stdout + res.stderr
    results = json.loads((hook / "checks.json").read_text())
    assert all(r["passed"] for r in results.values()), results


def test_failing_role_names_role_and_task(chroot_workdir, tmp_path):
    hook = tmp_path / "hook"
    _plan(hook, _roles(tmp_path), [{"name": "marker", "vars": {"marker_text": "x"}}, {"name": "boom"}], [])
    res = _hook("roles", chroot_workdir, hook)
    assert res.returncode == 1
    assert ("golden-step-failed: post-root.d/50-golden-roles: role boom, task 'explode on purpose'"
            in res.stdout), res.stdout
    assert not (hook / "roles.json").exists()
    assert not (chroot_workdir / "root" / ".ansible").exists()


def test_failing_check_is_reported(chroot_workdir, tmp_path):
    hook = tmp_path / "hook"
    _plan(hook, tmp_path, [], [{"name": "present", "file": "/etc/os-release"},
                               {"name": "absent", "file": "/etc/nope"},
                               {"name": "agent", "unit_enabled": "golden-nope.service"}])
    res = _hook("checks", chroot_workdir, hook)
    assert res.returncode == 1
    assert "check(s) failed: absent (/etc/nope is missing), agent (" in res.stdout
    results = json.loads((hook / "checks.json").read_text())
    assert results["present"]["passed"] and not results["absent"]["passed"] and not results["agent"]["passed"]


def test_command_checks_get_a_private_run(chroot_workdir, tmp_path):
    """As on a booted machine /run is a fresh tmpfs: sshd -T can have its /run/sshd, and nothing a
    check writes there lands in the image."""
    hook = tmp_path / "hook"
    before = sorted(p.name for p in (chroot_workdir / "run").iterdir())
    _plan(hook, tmp_path, [], [
        # ssh.service is enabled in the test chroot; its RuntimeDirectory=sshd is there as after boot
        {"name": "sshd-config", "command": "sshd -T -f /etc/ssh/sshd_config | grep -q '^permitrootlogin '"},
        {"name": "run-is-a-fresh-tmpfs", "command": "test \"$(ls -A /run)\" = sshd && touch /run/golden-x"},
    ])
    res = _hook("checks", chroot_workdir, hook)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(p.name for p in (chroot_workdir / "run").iterdir()) == before
