"""Bake-stage checks (``command``, ``file``, ``unit_enabled``) run against the finished chroot.

Boot-stage checks (``unit_active``, ``http``) need a running machine and are not run here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.errors import CommandError
from toolkit.core.run import run
from toolkit.image.spec import Check, CheckStage

# systemctl is-enabled states that mean "starts at boot".
ENABLED_STATES = ("enabled", "enabled-runtime", "alias", "generated")
CHECK_TIMEOUT = 300.0


@dataclass(frozen=True)
class CheckOutcome:
    """A bake check's result: passed or not, and what it said."""
    name: str
    passed: bool
    detail: str


def _text_tail(text: str, lines: int = 10) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# A command check sees /run as a booted machine would: a fresh tmpfs (in a private mount namespace,
# so nothing written there lands in the image) holding the RuntimeDirectory= of every enabled
# service (sshd -T refuses to run without /run/sshd).
_IN_CHROOT = (
    'root=$1; cmd=$2; shift 2; mount -t tmpfs -o mode=0755 golden-check "$root/run" || exit 125; '
    'for d in "$@"; do mkdir -p "$root/run/$d"; done; exec chroot "$root" /bin/sh -c "$cmd"'
)


def _safe_relative(path: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9_.@/-]+", path)) and not path.startswith("/") \
        and all(part not in ("", ".", "..") for part in path.split("/"))


def _unit_dirs(root: Path) -> list[Path]:
    return [root / p for p in ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")]


def runtime_directories(root: Path) -> list[str]:
    """RuntimeDirectory= entries of the services enabled in the image at ``root``."""
    found: list[str] = []
    wants = root / "etc" / "systemd" / "system"
    for link in sorted(wants.glob("*.wants/*.service")) if wants.is_dir() else []:
        unit = next((d / link.name for d in _unit_dirs(root) if (d / link.name).is_file()), None)
        if unit is None:
            continue
        for line in unit.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "RuntimeDirectory":
                found += [v for v in value.split() if _safe_relative(v)]
    return sorted(set(found))


def command_argv(root: Path, command: str, runtime_dirs: list[str] | None = None) -> list[str]:
    """The argv that runs ``command`` chrooted into ``root`` in a private mount namespace."""
    dirs = runtime_directories(root) if runtime_dirs is None else runtime_dirs
    return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", _IN_CHROOT, "golden-check",
            str(root), command, *dirs]


def run_check(check: Check, root: Path) -> CheckOutcome:
    """Run one bake-stage check against ``root``."""
    if check.stage is not CheckStage.BAKE:
        raise ValueError(f"check {check.name} is a {check.stage} check, not a bake check")
    if check.command:
        try:
            res = run(command_argv(root, check.command), check=False, capture=True, timeout=CHECK_TIMEOUT)
        except CommandError as exc:
            return CheckOutcome(check.name, False, exc.message)
        out = _text_tail((res.stdout or "") + (res.stderr or ""))
        detail = f"exit {res.returncode}" + (f": {out}" if out else "")
        return CheckOutcome(check.name, res.returncode == 0, detail)
    if check.file:
        path = root / check.file.lstrip("/")
        found = os.path.lexists(path)
        return CheckOutcome(check.name, found, f"{check.file} {'exists' if found else 'is missing'}")
    if check.unit_enabled:
        res = run(["systemctl", "--root", str(root), "is-enabled", check.unit_enabled], check=False, capture=True,
                  timeout=CHECK_TIMEOUT)
        state = (res.stdout or "").strip().splitlines()[-1:] or [(res.stderr or "").strip() or "unknown"]
        passed = res.returncode == 0 and state[0] in ENABLED_STATES
        return CheckOutcome(check.name, passed, f"{check.unit_enabled} is {state[0]}")
    raise ValueError(f"check {check.name}: kind {check.kind} cannot run in a chroot")


def run_checks(checks: list[Check], root: Path) -> list[CheckOutcome]:
    """Run the bake-stage checks of ``checks`` against ``root``, in order."""
    return [run_check(c, root) for c in checks if c.stage is CheckStage.BAKE]
