"""A UKI assembled and signed by golden is what firmware and sbverify expect: objcopy put each part at the VMA
golden computed, the rootfs hash archive rides in .initrd, ``sbverify --cert`` (independent of golden) accepts
the signed image and rejects it with one byte flipped."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.boot import GOLDEN
from toolkit.bake.collect import UKI, UKI_CERT, signed_uki
from toolkit.bake.uki import STUB, initrd_with_hash, pe_layout, place_sections
from toolkit.boot.pxe import IPXE_DIR, PxeSettings, plan_render, write_render
from toolkit.core.config import Settings
from toolkit.core.fsutil import sha256_file
from toolkit.trust import secureboot

pytestmark = pytest.mark.integration

SHA = "0123456789abcdef" * 4


def _sections(path: Path) -> dict[str, int]:
    out = subprocess.run(["objdump", "-h", str(path)], capture_output=True, text=True, check=True).stdout
    return {r[1]: int(r[3], 16) for r in (ln.split() for ln in out.splitlines()) if len(r) == 7 and r[0].isdigit()}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> secureboot.Hierarchy:
    home = tmp_path_factory.mktemp("home")
    h, made = secureboot.init_hierarchy(Settings(project=home, home=home, cache=home / "cache"))
    assert made == ["PK", "KEK", "db"]
    return h


def test_signed_uki_layout_and_sbverify(tmp_path: Path, keys: secureboot.Hierarchy) -> None:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(b"K" * 70001)  # objcopy and sbsign take any bytes; firmware tests run a real kernel (e2e)
    initrd.write_bytes(b"I" * 5003)
    made = signed_uki(tmp_path, SHA, keys.db)
    uki = tmp_path / UKI
    assert made[UKI].sha256 == sha256_file(uki) and made[UKI_CERT].sha256 == sha256_file(keys.cert("db"))
    want = place_sections(pe_layout(STUB.read_bytes()), [(".initrd", 5003 + 1 + 512), (".linux", 70001)])
    got = _sections(uki)
    assert [(n, got[n]) for n, _ in want] == want
    for name, content in ((".linux", kernel.read_bytes()), (".initrd", initrd_with_hash(initrd.read_bytes(), SHA))):
        dump = tmp_path / f"dump{name}"
        subprocess.run(["objcopy", "-O", "binary", f"--only-section={name}", str(uki), str(dump)], check=True)
        assert dump.read_bytes() == content, name
    assert not list(tmp_path.glob(".*unsigned*")), "the unsigned image is removed"

    ok = subprocess.run(["sbverify", "--cert", str(tmp_path / UKI_CERT), str(uki)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert secureboot.verifies(keys.cert("db"), uki)
    assert not secureboot.verifies(keys.cert("KEK"), uki)  # another certificate: refused

    data = bytearray(uki.read_bytes())
    data[got[".linux"] - got[".initrd"] + 4096] ^= 0x01  # one byte inside the signed part
    flipped = tmp_path / "flipped.efi"
    flipped.write_bytes(bytes(data))
    bad = subprocess.run(["sbverify", "--cert", str(tmp_path / UKI_CERT), str(flipped)], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "Signature verification failed" in bad.stdout + bad.stderr
    assert not secureboot.verifies(keys.cert("db"), flipped)


def test_keys_are_private_and_init_keeps_them(keys: secureboot.Hierarchy, tmp_path: Path) -> None:
    for name in secureboot.HIERARCHY:
        assert keys.key(name).stat().st_mode & 0o777 == 0o600
        assert b"BEGIN CERTIFICATE" in keys.cert(name).read_bytes()
    before = keys.key("db").read_bytes()
    home = keys.folder.parent.parent
    again, made = secureboot.init_hierarchy(Settings(project=home, home=home, cache=home / "cache"))
    assert made == [] and again.db.key.read_bytes() == before and again.owner == keys.owner


def test_pxe_render_writes_the_efi_ipxe_binaries_signed(tmp_path: Path, keys: secureboot.Hierarchy) -> None:
    settings = PxeSettings(out_dir=tmp_path / "pxe", server_url="http://10.77.0.1", interface="br0",
                           subnet="10.77.0.0", store_dir=tmp_path / "store", efi_signer=keys.db)
    result = write_render(settings, plan_render(settings))
    assert "tftp/snponly.efi" in result.files
    for name in ("snponly.efi", "ipxe.efi"):
        assert secureboot.verifies(keys.cert("db"), tmp_path / "pxe" / "tftp" / name), name
        assert not secureboot.verifies(keys.cert("db"), IPXE_DIR / name)  # Debian's own copy stays unsigned
    undionly = (tmp_path / "pxe" / "tftp" / "undionly.kpxe").read_bytes()
    assert undionly == (IPXE_DIR / "undionly.kpxe").read_bytes()  # BIOS iPXE: nothing to sign


def test_golden_keys_init_makes_the_secure_boot_hierarchy_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "GOLDEN_HOME": str(home)}
    first = subprocess.run([GOLDEN, "--json", "keys", "init"], capture_output=True, text=True, env=env, check=True)
    kinds = {k["kind"]: k for k in json.loads(first.stdout)["kinds"]}
    assert kinds["secureboot"] == {"kind": "secureboot", "created": True, "ids": ["PK", "KEK", "db"]}
    folder = home / "keys" / "secureboot"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert all((folder / f"{n}.key").stat().st_mode & 0o777 == 0o600 for n in secureboot.HIERARCHY)
    again = subprocess.run([GOLDEN, "--json", "keys", "init"], capture_output=True, text=True, env=env, check=True)
    assert {k["kind"]: k["created"] for k in json.loads(again.stdout)["kinds"]} == {"signing": False,
                                                                                    "secureboot": False}
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    settings = Settings(project=tmp_path, home=home, cache=tmp_path / "cache")
    assert secureboot.db_key(settings) == secureboot.DbKey(folder / "db.key", folder / "db.crt")
