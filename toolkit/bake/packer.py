"""The Packer backend, pure: options, the generated JSON template, the files a disk gets for the
bake and loses at sealing, and reading Packer's output.

A ``builder: packer`` layer boots the root of its DIB-baked parent (``extends``) as a
partition-less ext4 disk with direct kernel boot (no device-mapper here, no boot loader needed),
under QEMU through Debian's packer 1.6 (JSON templates, the ``qemu`` builder, the ``ansible``
provisioner). The communicator logs in with a throwaway key that only the bake's disk knows;
toolkit.bake.packerbuild removes it, and everything else the bake-time boot left, before sealing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.core.duration import parse_duration
from toolkit.core.errors import InputError

MIN_VERSION = (1, 6, 0)  # the JSON qemu builder options used below (skip_resize_disk, iso_checksum none)
DEFAULT_SSH_TIMEOUT = "10m"
DEFAULT_MEMORY_MB = 1024
DEFAULT_CPUS = 2
HOST_ALIAS = "image"  # the inventory name the roles see, as under DIB

# Put on the disk for the bake only (paths inside the root), removed again at sealing.
AUTHORIZED_KEY = "etc/ssh/golden-packer-bake.pub"
SSHD_DROPIN = "etc/ssh/sshd_config.d/00-golden-packer-bake.conf"
NETWORK_UNIT = "etc/systemd/network/99-golden-packer-bake.network"
NETWORKD_LINK = "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
BAKE_ONLY = (AUTHORIZED_KEY, SSHD_DROPIN, NETWORK_UNIT, NETWORKD_LINK)
# What a boot writes that no image should carry (restored from, or absent as in, the parent's root):
# its identity, its logs (journal, wtmp/lastlog of the communicator's logins), timer stamps, Ansible's
# temp folders.
BOOT_LEFTOVERS = ("etc/machine-id", "var/lib/systemd/random-seed", "var/lib/systemd/credential.secret",
                  "var/lib/systemd/timers", "var/log", "root/.ansible", "tmp/.golden-ansible",
                  "root/.ssh/known_hosts")

# sshd keeps the first value it reads; this drop-in sorts before the hardening role's.
SSHD_DROPIN_TEXT = f"""\
# golden builder: packer, bake only (removed before sealing): the communicator's throwaway key
PermitRootLogin prohibit-password
AuthorizedKeysFile /{AUTHORIZED_KEY}
"""
NETWORK_UNIT_TEXT = """\
# golden builder: packer, bake only (removed before sealing): QEMU's user network
[Match]
Name=e*

[Network]
DHCP=ipv4
"""
NETWORKD_TARGET = "/lib/systemd/system/systemd-networkd.service"


@dataclass(frozen=True)
class PackerOptions:
    """How packer runs: its executable, QEMU accelerator, SSH wait, memory and CPUs."""
    executable: str
    accelerator: str = "tcg"
    ssh_timeout_s: int = 600
    memory_mb: int = DEFAULT_MEMORY_MB
    cpus: int = DEFAULT_CPUS


def packer_options(config: dict[str, Any] | None, env: dict[str, str], found: str | None) -> PackerOptions:
    """golden.yaml ``packer:`` with GOLDEN_PACKER, GOLDEN_PACKER_ACCELERATOR, GOLDEN_PACKER_SSH_TIMEOUT over it."""
    cfg = config or {}
    exe = env.get("GOLDEN_PACKER") or cfg.get("executable") or found or "packer"
    accel = env.get("GOLDEN_PACKER_ACCELERATOR") or cfg.get("accelerator") or "tcg"
    if not re.fullmatch(r"[a-z]{1,16}", accel):
        raise InputError(f"GOLDEN_PACKER_ACCELERATOR: expected a word such as tcg or kvm, got {accel[:40]!r}")
    timeout = env.get("GOLDEN_PACKER_SSH_TIMEOUT") or cfg.get("ssh_timeout") or DEFAULT_SSH_TIMEOUT
    seconds = parse_duration(timeout, "packer ssh_timeout", hi=24 * 3600.0)
    return PackerOptions(executable=exe, accelerator=accel, ssh_timeout_s=max(1, int(seconds)),
                         memory_mb=int(cfg.get("memory_mb") or DEFAULT_MEMORY_MB),
                         cpus=int(cfg.get("cpus") or DEFAULT_CPUS))


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``Packer v1.6.6`` (or ``1.6.6``) -> (1, 6, 6)."""
    m = re.search(r"\bv?(\d+)\.(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


@dataclass(frozen=True)
class PackerPaths:
    """Where one packer bake works, inside its staging folder (cleanup has one place to look)."""

    work: Path

    @property
    def root(self) -> Path:  # the parent's root, unpacked, then made into the disk
        """The parent's root, unpacked, then made into the disk."""
        return self.work / "root"

    @property
    def disk(self) -> Path:
        """The ext4 disk packer boots."""
        return self.work / "disk.raw"

    @property
    def key(self) -> Path:
        """The communicator's throwaway private key."""
        return self.work / "ssh" / "id_ed25519"

    @property
    def output(self) -> Path:  # packer's output_directory (must not exist before the build)
        """packer's output_directory (must not exist before the build)."""
        return self.work / "output"

    @property
    def baked_disk(self) -> Path:
        """The disk as the roles left it."""
        return self.output / "disk.raw"

    @property
    def template(self) -> Path:
        """The generated packer template."""
        return self.work / "template.json"

    @property
    def playbook(self) -> Path:
        """The playbook packer's ansible provisioner runs."""
        return self.work / "site.yml"

    @property
    def serial_log(self) -> Path:
        """The machine's serial console."""
        return self.work / "serial.log"

    @property
    def ansible_home(self) -> Path:
        """Ansible's home during the bake (its temp and fact caches)."""
        return self.work / "ansible-home"

    @property
    def mount(self) -> Path:
        """Where the baked disk is mounted to seal it."""
        return self.work / "mnt"


def kernel_cmdline() -> str:
    """The bake machine's kernel command line."""
    # The agent stays masked during the bake (it would report to nobody and record a first boot);
    # the mask lives only on this command line, never on the disk.
    return "root=/dev/vda rw console=ttyS0,115200 fsck.mode=skip systemd.mask=golden-agent.service"


def template(paths: PackerPaths, opts: PackerOptions, *, kernel: Path, initrd: Path, disk_mb: int,
             ansible_playbook: str, roles_dir: Path) -> dict[str, Any]:
    """The packer template of one bake (JSON: packer 1.6 reads no HCL2 qemu options we rely on)."""
    ssh_args = ("-o ControlMaster=no -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no "
                "-o IdentitiesOnly=yes")
    return {
        "builders": [{
            "type": "qemu",
            "accelerator": opts.accelerator,
            "disk_image": True,
            "iso_url": str(paths.disk),
            "iso_checksum": "none",
            "format": "raw",
            "disk_size": f"{disk_mb}M",
            "skip_resize_disk": True,
            "skip_compaction": True,
            "disk_interface": "virtio",
            "net_device": "virtio-net",
            "output_directory": str(paths.output),
            "vm_name": paths.baked_disk.name,
            "headless": True,
            "vnc_bind_address": "127.0.0.1",
            "memory": opts.memory_mb,
            "cpus": opts.cpus,
            "boot_wait": "1s",
            "communicator": "ssh",
            "ssh_host": "127.0.0.1",
            "ssh_username": "root",
            "ssh_private_key_file": str(paths.key),
            "ssh_timeout": f"{opts.ssh_timeout_s}s",
            "shutdown_command": "systemctl poweroff",
            "shutdown_timeout": "5m",
            "qemuargs": [
                ["-kernel", str(kernel)],
                ["-initrd", str(initrd)],
                ["-append", kernel_cmdline()],
                ["-serial", f"file:{paths.serial_log}"],
                # Forward SSH on loopback only (packer's default forward listens on every address).
                ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
            ],
        }],
        "provisioners": [{
            "type": "ansible",
            "command": ansible_playbook,
            "playbook_file": str(paths.playbook),
            "user": "root",
            "host_alias": HOST_ALIAS,
            "use_proxy": False,
            "ansible_env_vars": [
                f"ANSIBLE_ROLES_PATH={roles_dir}",
                f"ANSIBLE_HOME={paths.ansible_home}",
                f"ANSIBLE_LOCAL_TEMP={paths.ansible_home / 'tmp'}",
                "ANSIBLE_REMOTE_TMP=/tmp/.golden-ansible",
                "ANSIBLE_HOST_KEY_CHECKING=False",
                "ANSIBLE_PIPELINING=True",
                f"ANSIBLE_SSH_ARGS={ssh_args}",
                "ANSIBLE_RETRY_FILES_ENABLED=0",
                "ANSIBLE_NOCOLOR=1",
                "ANSIBLE_FORCE_COLOR=0",
                "ANSIBLE_DEPRECATION_WARNINGS=0",
                "ANSIBLE_CALLBACK_RESULT_FORMAT=yaml",
                "LANG=C.UTF-8",
                "LC_ALL=C.UTF-8",
            ],
            "extra_arguments": ["--extra-vars", "ansible_python_interpreter=/usr/bin/python3"],
        }],
    }


# -- reading packer's output ----------------------------------------------------------------------

_TASK = re.compile(r"TASK \[(?:(?P<role>[^:\]]+) : )?(?P<task>[^\]]+)\]")
_FATAL = re.compile(r"fatal: \[[^\]]+\]: (?:FAILED|UNREACHABLE)!(?:\s*=>\s*)?(?P<rest>.*)")
_MSG_LINE = re.compile(r"^\s*msg: (?P<msg>.+)")
_PHASES = (
    ("Copying hard drive", "copying the disk"),
    ("Starting VM, booting disk image", "booting the machine (QEMU)"),
    ("Waiting for SSH to become available", "waiting for SSH"),
    ("Connected to SSH!", "connected over SSH"),
    ("Provisioning with Ansible", "running the roles (ansible)"),
    ("Gracefully halting virtual machine", "shutting the machine down"),
)
_ERRORS = (
    "Timeout waiting for SSH",
    "Error executing Ansible",
    "Build 'qemu' errored",
)


def strip_prefix(line: str) -> str:
    """Packer prefixes a builder's lines with ``    qemu: `` (and ``==> qemu: `` for its own steps)."""
    return re.sub(r"^\s*(==> )?qemu: ?", "", line)


@dataclass
class PackerWatch:
    """What we learn from packer's output while it runs: the phase, the role task that failed."""

    phase: str = "starting packer"
    task: str | None = None
    failure: str | None = None
    ssh_timeout: bool = False
    errors: list[str] | None = None
    _msg_pending: bool = False

    def on_line(self, line: str) -> str | None:
        """Take one output line; return the new phase when it announces one."""
        text = strip_prefix(line.rstrip("\n"))
        m = _TASK.search(text)
        if m:
            role = m.group("role")
            self.task = f"role {role.strip()}, task {m.group('task').strip()!r}" if role \
                else f"task {m.group('task').strip()!r}"
            if self.failure is None:
                self.phase = f"ansible: {self.task}"
                return self.phase
        f = _FATAL.search(text)
        if f and self.failure is None:
            self.failure = f"{self.task or 'a task'}: {_fatal_msg(f.group('rest'))}"
            self._msg_pending = not f.group("rest").strip()  # the YAML result format: msg on a later line
        elif self._msg_pending and (m2 := _MSG_LINE.match(text)):
            self.failure = f"{self.task or 'a task'}: {m2.group('msg').strip()}"
            self._msg_pending = False
        if "Timeout waiting for SSH" in text:
            self.ssh_timeout = True
        if text.startswith(_ERRORS) or "error(s) occurred" in text:
            self.errors = (self.errors or []) + [text.strip()]
        for needle, phase in _PHASES:
            if needle in text:
                self.phase = phase
                return phase
        return None


def _fatal_msg(rest: str) -> str:
    m = re.search(r'"msg": "([^"]*)"|msg: (.*)', rest)
    if m:
        return (m.group(1) or m.group(2) or "").strip() or "failed"
    return rest.strip()[:200] or "failed"
