"""The initramfs rootfs check (roles/netboot) with a signed UKI: the hash inside the signed image wins over the
command line, which anyone on the boot network could forge. The check runs under /bin/sh as live-boot runs it,
with panic() and the console stubbed (as molecule/netboot/verify.yml does); only the path of the signed hash
file is moved into the test's folder."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from toolkit.bake.uki import ROOTFS_HASH_PATH

CHECK = Path(__file__).resolve().parents[2] / "roles" / "netboot" / "files" / "9995-golden-verify.sh"
OTHER = "0" * 64


def _run(tmp_path: Path, cmdline: str, signed: str | None) -> subprocess.CompletedProcess[str]:
    medium = tmp_path / "medium"
    (medium / "live").mkdir(parents=True, exist_ok=True)
    (medium / "live" / "rootfs.squashfs").write_bytes(b"not really a squashfs\n")
    signed_file = tmp_path / "rootfs.sha256"
    signed_file.unlink(missing_ok=True)
    if signed is not None:
        signed_file.write_text(signed + "\n")
    text = CHECK.read_text()
    assert f"/{ROOTFS_HASH_PATH}" in text  # the path the UKI's cpio writes is the one the check reads
    script = tmp_path / "check.sh"
    script.write_text(text.replace(f"/{ROOTFS_HASH_PATH}", str(signed_file)))
    shell = (f". {script}; Golden_say() {{ echo \"$1\"; }}; panic() {{ echo \"PANIC: $*\"; exit 42; }}; "
             f"LIVE_BOOT_CMDLINE=\"$CMDLINE\"; Verify_checksums {medium}")
    return subprocess.run(["/bin/sh", "-c", shell], env={"CMDLINE": cmdline, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)


def _medium_sha() -> str:
    return hashlib.sha256(b"not really a squashfs\n").hexdigest()


@pytest.mark.parametrize("cmdline", ["boot=live", f"boot=live golden.sha256={OTHER}", "boot=live golden.noverify"])
def test_signed_hash_verifies_whatever_the_command_line_says(tmp_path: Path, cmdline: str) -> None:
    res = _run(tmp_path, cmdline, _medium_sha())
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"rootfs sha256 verified: {_medium_sha()}" in res.stdout and "NOT verified" not in res.stdout


def test_a_forged_command_line_cannot_point_at_another_root(tmp_path: Path) -> None:
    # the medium is "another root": the command line names its hash, the signed image does not
    res = _run(tmp_path, f"boot=live golden.sha256={_medium_sha()}", OTHER)
    assert res.returncode == 42 and "REFUSING TO BOOT: sha256 mismatch" in res.stdout, res.stdout
    assert "differs from the signed image's" in res.stdout


def test_golden_noverify_cannot_switch_the_signed_check_off(tmp_path: Path) -> None:
    res = _run(tmp_path, "boot=live golden.noverify", OTHER)
    assert res.returncode == 42 and "REFUSING TO BOOT: sha256 mismatch" in res.stdout, res.stdout


def test_without_a_signed_hash_the_command_line_decides_as_before(tmp_path: Path) -> None:
    assert _run(tmp_path, f"boot=live golden.sha256={_medium_sha()}", None).returncode == 0
    bad = _run(tmp_path, f"boot=live golden.sha256={OTHER}", None)
    assert bad.returncode == 42 and "sha256 mismatch" in bad.stdout
