"""builder: packer logic: the template, options, reading packer's output, the roles the machine
runs, sealing, and the validation that keeps running-system roles out of DIB bakes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from toolkit.bake.packer import (
    AUTHORIZED_KEY,
    BAKE_ONLY,
    NETWORKD_LINK,
    PackerOptions,
    PackerPaths,
    PackerWatch,
    kernel_cmdline,
    packer_options,
    parse_version,
    template,
)
from toolkit.bake.packerbuild import drop_host_keys, machine_roles, packer_version, rejection, seal
from toolkit.core.errors import BakeError, InputError, ToolMissingError
from toolkit.image.spec import ImageSpec, parse_spec_file, validate_all


def _template(**opts: object) -> dict:
    paths = PackerPaths(Path("/s/work"))
    return template(paths, PackerOptions(executable="/usr/bin/packer", **opts),  # type: ignore[arg-type]
                    kernel=Path("/store/base/1/vmlinuz"), initrd=Path("/store/base/1/initrd"), disk_mb=2048,
                    ansible_playbook="/venv/bin/ansible-playbook", roles_dir=Path("/p/roles"))


def test_template_boots_the_disk_directly_under_tcg_with_ssh_on_loopback() -> None:
    t = _template()
    b = t["builders"][0]
    assert b["type"] == "qemu" and b["accelerator"] == "tcg"
    assert b["disk_image"] is True and b["format"] == "raw" and b["iso_url"] == "/s/work/disk.raw"
    assert b["skip_resize_disk"] is True and b["disk_size"] == "2048M"
    args = dict((a[0], a[1]) for a in b["qemuargs"])
    assert args["-kernel"] == "/store/base/1/vmlinuz" and args["-initrd"] == "/store/base/1/initrd"
    assert args["-append"].startswith("root=/dev/vda rw ")
    assert "systemd.mask=golden-agent.service" in args["-append"]
    assert args["-netdev"] == "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"
    assert args["-serial"] == "file:/s/work/serial.log"
    assert b["ssh_host"] == "127.0.0.1" and b["vnc_bind_address"] == "127.0.0.1"
    assert b["ssh_private_key_file"] == "/s/work/ssh/id_ed25519" and b["ssh_timeout"] == "600s"
    assert b["output_directory"] == "/s/work/output"
    p = t["provisioners"]
    assert [x["type"] for x in p] == ["ansible"]
    assert p[0]["host_alias"] == "image" and p[0]["user"] == "root" and p[0]["use_proxy"] is False
    assert "ANSIBLE_ROLES_PATH=/p/roles" in p[0]["ansible_env_vars"]


def test_template_takes_the_options() -> None:
    b = _template(accelerator="kvm", ssh_timeout_s=45, memory_mb=2048, cpus=1)["builders"][0]
    assert (b["accelerator"], b["ssh_timeout"], b["memory"], b["cpus"]) == ("kvm", "45s", 2048, 1)


def test_kernel_cmdline_has_no_secret_and_no_network_boot() -> None:
    assert "boot=live" not in kernel_cmdline() and "fetch=" not in kernel_cmdline()


@pytest.mark.parametrize(("env", "config", "expected"), [
    ({}, None, ("packer", "tcg", 600)),
    ({"GOLDEN_PACKER": "/opt/packer"}, {"executable": "/usr/bin/packer"}, ("/opt/packer", "tcg", 600)),
    ({}, {"accelerator": "kvm", "ssh_timeout": "2m"}, ("packer", "kvm", 120)),
    ({"GOLDEN_PACKER_SSH_TIMEOUT": "20s"}, {"ssh_timeout": "2m"}, ("packer", "tcg", 20)),
    ({"GOLDEN_PACKER_ACCELERATOR": "warp"}, None, ("packer", "warp", 600)),  # packer itself judges it
])
def test_options(env: dict, config: dict | None, expected: tuple) -> None:
    o = packer_options(config, env, None)
    assert (o.executable, o.accelerator, o.ssh_timeout_s) == expected


@pytest.mark.parametrize(("env", "needle"), [
    ({"GOLDEN_PACKER_ACCELERATOR": "kvm,tcg"}, "GOLDEN_PACKER_ACCELERATOR"),
    ({"GOLDEN_PACKER_ACCELERATOR": "-kvm"}, "GOLDEN_PACKER_ACCELERATOR"),
    ({"GOLDEN_PACKER_SSH_TIMEOUT": "soon"}, "packer ssh_timeout"),
    ({"GOLDEN_PACKER_SSH_TIMEOUT": "0s"}, "packer ssh_timeout"),
    ({"GOLDEN_PACKER_SSH_TIMEOUT": "9d"}, "packer ssh_timeout"),
])
def test_bad_options(env: dict, needle: str) -> None:
    with pytest.raises(InputError, match=needle) as err:
        packer_options(None, env, None)
    assert err.value.exit_code == 2


@pytest.mark.parametrize(("text", "expected"), [
    ("Packer v1.6.6\n", (1, 6, 6)),
    ("1.9.4", (1, 9, 4)),
    ("Packer v1.10.0\n\nYour version of Packer is out of date!", (1, 10, 0)),
    ("something else", None),
])
def test_parse_version(text: str, expected: tuple | None) -> None:
    assert parse_version(text) == expected


def _fake_packer(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "packer"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)
    return str(exe)


def test_packer_version_checks(tmp_path: Path) -> None:
    assert packer_version(PackerOptions(executable=_fake_packer(tmp_path, 'echo "Packer v1.6.6"'))) == "1.6.6"
    with pytest.raises(BakeError, match=r"packer 1\.5\.0 at .* is too old: builder: packer needs 1\.6\.0"):
        packer_version(PackerOptions(executable=_fake_packer(tmp_path, 'echo "Packer v1.5.0"')))
    with pytest.raises(BakeError, match="did not say which packer"):
        packer_version(PackerOptions(executable=_fake_packer(tmp_path, "echo hello; exit 3")))
    with pytest.raises(ToolMissingError, match="packer not found"):
        packer_version(PackerOptions(executable=str(tmp_path / "nope")))


ROLE_FAILED = [
    "==> qemu: Provisioning with Ansible...",
    "    qemu: TASK [Gathering Facts] *********************************************************",
    "    qemu: ok: [image]",
    "    qemu: TASK [kvstore : Seed the data through the running service] *****************",
    '    qemu: fatal: [image]: FAILED! => {"changed": false, "msg": "Status code was -1 and not [200]"}',
    "    qemu: TASK [later : never reached] *****",
    "==> qemu: Provisioning step had errors: Running the cleanup provisioner, if present...",
    "Build 'qemu' errored after 2 minutes: Error executing Ansible: Non-zero exit status: exit status 2",
]


def test_watch_names_the_failing_task() -> None:
    w = PackerWatch()
    phases = [p for line in ROLE_FAILED if (p := w.on_line(line))]
    assert w.failure == "role kvstore, task 'Seed the data through the running service': " \
                        "Status code was -1 and not [200]"
    assert phases[0] == "running the roles (ansible)"
    assert "ansible: role kvstore, task 'Seed the data through the running service'" in phases
    assert not w.ssh_timeout


def test_watch_yaml_result_format() -> None:
    w = PackerWatch()
    w.on_line("    qemu: TASK [kvstore : Fail first] ****")
    w.on_line("    qemu: fatal: [image]: FAILED! =>")
    assert w.failure == "role kvstore, task 'Fail first': failed"
    w.on_line("    qemu:   changed: false")
    w.on_line("    qemu:   msg: broken on purpose")
    assert w.failure == "role kvstore, task 'Fail first': broken on purpose"
    w2 = PackerWatch()
    w2.on_line("    qemu: TASK [kvstore : Fail first] ****")
    w2.on_line("    qemu: fatal: [image]: FAILED! => changed=false msg: broken on purpose")
    assert w2.failure == "role kvstore, task 'Fail first': broken on purpose"


def test_watch_ssh_timeout() -> None:
    w = PackerWatch()
    for line in ["==> qemu: Starting VM, booting disk image", "==> qemu: Waiting for SSH to become available...",
                 "==> qemu: Timeout waiting for SSH.",
                 "Build 'qemu' errored after 20 seconds: Timeout waiting for SSH."]:
        w.on_line(line)
    assert w.ssh_timeout and w.failure is None and w.phase == "waiting for SSH"


def test_rejection_is_packers_own_words_on_one_line() -> None:
    out = """Error: Failed to prepare build: "qemu"

1 error(s) occurred:

* invalid accelerator, only 'kvm', 'tcg', 'xen', 'hax', 'hvf', 'whpx', or 'none'
are allowed

"""
    assert rejection(out) == ("invalid accelerator, only 'kvm', 'tcg', 'xen', 'hax', 'hvf', 'whpx', or 'none' "
                              "are allowed")


def _spec(text: str, tmp_path: Path, name: str = "child") -> ImageSpec:
    path = tmp_path / "images" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    spec, problems = parse_spec_file(path, tmp_path)
    assert spec is not None and not problems, problems
    return spec


def test_machine_runs_the_layers_roles_and_the_agent_when_the_layer_adds_boot_checks(tmp_path: Path) -> None:
    parent = _spec("name: base\nroles: [{name: netboot}, {name: golden_agent, vars: {golden_agent_interval_s: 9}}]\n",
                   tmp_path, "base")
    layer = _spec("name: child\nextends: base\nbuilder: packer\nroles: [{name: kvstore}]\n"
                  "checks: [{name: up, unit_active: kvstore.service}]\n", tmp_path)
    merged = layer.merged_over(parent)
    assert [(r.name, r.vars) for r in machine_roles(merged, layer)] == [
        ("kvstore", {}), ("golden_agent", {"golden_agent_interval_s": 9})]
    quiet = _spec("name: child\nextends: base\nbuilder: packer\nroles: [{name: kvstore}]\n"
                  "checks: [{name: f, file: /etc/x}]\n", tmp_path)
    assert [r.name for r in machine_roles(quiet.merged_over(parent), quiet)] == ["kvstore"]
    assert merged.builder == "packer" and parent.builder == "dib"


def _project(tmp_path: Path, images: dict[str, str], running: bool = True) -> tuple[Path, Path]:
    images_dir, roles_dir = tmp_path / "images", tmp_path / "roles"
    images_dir.mkdir(exist_ok=True)
    for role, needs in (("live", running), ("plain", False)):
        (roles_dir / role / "tasks").mkdir(parents=True, exist_ok=True)
        (roles_dir / role / "tasks" / "main.yml").write_text("---\n[]\n")
        (roles_dir / role / "meta").mkdir(exist_ok=True)
        (roles_dir / role / "meta" / "main.yml").write_text("---\ngalaxy_info: {role_name: x}\n")
        if needs:
            (roles_dir / role / "meta" / "golden.yml").write_text("---\nneeds_running_system: true\n")
    for name, text in images.items():
        (images_dir / f"{name}.yaml").write_text(text)
    return images_dir, roles_dir


@pytest.mark.parametrize(("images", "expected"), [
    ({"base": "name: base\nroles: [{name: plain}, {name: live}]\n"},
     ["images/base.yaml: .roles[1].name: role 'live' needs a running system (meta/golden.yml "
      "needs_running_system) and cannot run in a DIB chroot: use builder: packer"]),
    ({"base": "name: base\nbuilder: dib\nroles: [{name: live}]\n"},
     ["images/base.yaml: .roles[0].name: role 'live' needs a running system (meta/golden.yml "
      "needs_running_system) and cannot run in a DIB chroot: use builder: packer"]),
    ({"base": "name: base\nroles: [{name: plain}]\n",
      "seed": "name: seed\nextends: base\nbuilder: packer\nroles: [{name: live}]\n"}, []),
    ({"seed": "name: seed\nbuilder: packer\nroles: [{name: live}]\n"},
     ["images/seed.yaml: .builder: packer boots the root of a DIB-baked parent: set extends"]),
    ({"base": "name: base\n", "seed": "name: seed\nextends: base\nbuilder: packer\npackages: [curl]\n"},
     ["images/seed.yaml: .packages: a builder: packer layer takes no packages (a DIB option): put them in the "
      "parent image, or install packages with a role"]),
    ({"base": "name: base\n", "seed": "name: seed\nextends: base\nbuilder: packer\nbase: {release: trixie}\n"},
     ["images/seed.yaml: .base: a builder: packer layer takes its base from the parent image: remove base"]),
    ({"base": "name: base\nbuilder: chroot\n"},
     ["images/base.yaml: .builder: Input should be 'dib' or 'packer'"]),
])
def test_validate_builder_and_running_system_roles(tmp_path: Path, images: dict, expected: list) -> None:
    images_dir, roles_dir = _project(tmp_path, images)
    assert validate_all(images_dir, roles_dir) == expected


def test_the_shipped_running_system_role_is_refused_under_dib(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    images = tmp_path / "images"
    images.mkdir()
    (images / "seeded.yaml").write_text((root / "images" / "seeded.yaml").read_text().replace("builder: packer",
                                                                                             "builder: dib"))
    (images / "base.yaml").write_text((root / "images" / "base.yaml").read_text())
    problems = validate_all(images, root / "roles")
    assert problems == ["images/seeded.yaml: .roles[0].name: role 'kvstore' needs a running system "
                        "(meta/golden.yml needs_running_system) and cannot run in a DIB chroot: "
                        "use builder: packer"]


def test_seal_removes_the_bake_only_files_and_restores_what_the_boot_wrote(tmp_path: Path) -> None:
    parent, root = tmp_path / "parent", tmp_path / "root"
    for d in (parent, root):
        (d / "etc" / "ssh").mkdir(parents=True)
        (d / "var" / "log" / "journal").mkdir(parents=True)
    (parent / "etc" / "machine-id").write_text("uninitialized\n")
    (root / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var" / "log" / "journal" / "abc").mkdir()
    (root / "var" / "log" / "wtmp").write_text("root logged in over ssh")
    (root / "etc" / "ssh" / "ssh_host_ed25519_key").write_text("made at the bake's boot")
    (root / "etc" / "ssh" / "sshd_config").write_text("kept")
    (root / "root" / ".ansible" / "tmp").mkdir(parents=True)
    for rel in BAKE_ONLY:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel == NETWORKD_LINK:
            os.symlink("/lib/systemd/system/systemd-networkd.service", root / rel)
        else:
            (root / rel).write_text("x")
    (root / "var" / "lib" / "kvstore").mkdir(parents=True)
    (root / "var" / "lib" / "kvstore" / "data.json").write_text("{}")
    seal(root, parent)
    assert (root / "etc" / "ssh" / "ssh_host_ed25519_key").exists()  # the bake checks' sshd -T needs it
    drop_host_keys(root, parent)
    assert not any(os.path.lexists(root / rel) for rel in BAKE_ONLY)
    assert not (root / AUTHORIZED_KEY).exists()
    assert (root / "etc" / "machine-id").read_text() == "uninitialized\n"
    assert list((root / "var" / "log" / "journal").iterdir()) == []
    assert not (root / "var" / "log" / "wtmp").exists()
    assert not (root / "etc" / "ssh" / "ssh_host_ed25519_key").exists()
    assert (root / "etc" / "ssh" / "sshd_config").read_text() == "kept"
    assert not (root / "root" / ".ansible").exists()
    assert (root / "var" / "lib" / "kvstore" / "data.json").exists()  # what the roles made stays


def test_run_packer_streams_its_output_and_leaves_nothing_on_a_timeout(tmp_path: Path) -> None:
    """packerpy's PackerExecutable with a stand-in packer that prints, then hangs with a child (its
    "QEMU"), which ignores SIGINT: the timeout ends both, and every line arrived while it ran."""
    from toolkit.bake.packerbuild import run_packer
    from toolkit.core.errors import CommandError
    from toolkit.core.run import descendants

    exe = _fake_packer(tmp_path, 'echo "==> qemu: Starting VM, booting disk image"\n'
                                 "sh -c 'trap \"\" INT; exec sleep 300' &\n"
                                 'echo $! > "$0.child"\necho "$@" > "$0.args"\nwait\n')
    log, lines = tmp_path / "log", []
    log.write_text("")
    with pytest.raises(CommandError, match="did not finish within 10 s"):
        run_packer(exe, "build", tmp_path / "t.json", log_path=log, on_line=lines.append, timeout=10, grace=1,
                   flags={"color": "false"})
    assert lines == ["==> qemu: Starting VM, booting disk image"]
    assert (tmp_path / "packer.args").read_text().split() == ["build", "-color=false", str(tmp_path / "t.json")]
    assert descendants(os.getpid()) == []
    # its "QEMU" too: once packer exits it is init's child, no longer below us, and must be gone anyway
    child = int((tmp_path / "packer.child").read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and "Z" not in _proc_state(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "Z" in _proc_state(child), f"pid {child} outlived the timeout"


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


@pytest.mark.parametrize(("text", "expected"), [
    ("needs_running_system: yes\n", []),  # YAML 1.1 yes is a bool
    ("needs_running_system: 'yes'\n", ["roles/live/meta/golden.yml: .needs_running_system: expected true or false, "
                                        "got 'yes'"]),
    ("needs_running_sytem: true\n", ["roles/live/meta/golden.yml: .needs_running_sytem: unknown key "
                                      "(known: needs_running_system)"]),
    ("[needs_running_system]\n", ["roles/live/meta/golden.yml: .: expected a mapping, got list"]),
])
def test_bad_role_meta(tmp_path: Path, text: str, expected: list) -> None:
    images_dir, roles_dir = _project(tmp_path, {})
    (roles_dir / "live" / "meta" / "golden.yml").write_text("---\n" + text)
    assert validate_all(images_dir, roles_dir) == expected


def test_installed_packages_reads_the_images_dpkg_status(tmp_path: Path) -> None:
    """Real dpkg-query on a made-up status file: installed ones only, multi-arch names as DIB's manifest has them."""
    from toolkit.bake.packerbuild import installed_packages

    admin = tmp_path / "var" / "lib" / "dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    stanza = "Package: {p}\nStatus: {s}\nPriority: optional\nArchitecture: {a}\n{m}Version: {v}\nDescription: x\n\n"
    (admin / "status").write_text(
        stanza.format(p="openssh-server", s="install ok installed", a="amd64", m="", v="1:9.2p1-2+deb12u3")
        + stanza.format(p="libc6", s="install ok installed", a="amd64", m="Multi-Arch: same\n", v="2.36-9+deb12u9")
        + stanza.format(p="gone", s="deinstall ok config-files", a="amd64", m="", v="1.0"))
    assert installed_packages(tmp_path) == {"openssh-server": "1:9.2p1-2+deb12u3", "libc6:amd64": "2.36-9+deb12u9"}
