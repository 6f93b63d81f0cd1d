"""Issue 25, criterion 2, on a real baked build and a real ``golden serve``: a build baked before the home
had keys is refused until ``golden keys sign-builds`` signs it; signed, it publishes and serves; with its
manifest.json edited after signing, ``golden publish`` and ``golden promote`` exit 1 with the reason and
``golden serve`` answers its host's boot script with the no-build script and serves none of its files.

The baked build comes from the machine-wide fixture cache: its artifacts are hard-linked into this test's
store (never written), its manifest copied (this copy is the one edited)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.boot import GOLDEN, golden_env, start_golden_serve, write_inventory
from toolkit.store.artifacts import MANIFEST, Build, Store

pytestmark = pytest.mark.integration
MAC = "52:54:00:25:02:01"


def golden(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GOLDEN, "--home", str(home), *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **golden_env(), "GOLDEN_USER": "tester"})


def _link_unsigned(build: Build, home: Path) -> Path:
    """``build`` committed into ``home``'s store as a bake made before the home had keys."""
    store = Store(home / "store")
    staged = store.stage(build.image)
    for name in build.manifest.artifacts:
        os.link(build.path / name, staged / name)
    shutil.copyfile(build.path / MANIFEST, staged / MANIFEST)
    return store.commit(build.image, build.build_id, staged).path


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read(4096).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _one_error_line(res: subprocess.CompletedProcess[str], needle: str) -> None:
    errors = [line for line in res.stderr.splitlines() if line.startswith("golden: error: ")]
    assert len(errors) == 1 and needle in errors[0], res.stderr
    assert "Traceback" not in res.stderr


def test_an_edited_manifest_is_refused_by_publish_promote_and_serve(baked_base: Build, tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = _link_unsigned(baked_base, home)
    ref = f"base/{baked_base.build_id}"
    res = golden(home, "keys", "init")
    assert res.returncode == 0 and "1 stored build(s) are unsigned" in res.stdout + res.stderr, res
    kid = json.loads(golden(home, "--json", "keys", "list").stdout)[0]["key_id"]

    # made before the home had keys: refused until signed (or allowed explicitly)
    res = golden(home, "publish", "base", baked_base.build_id, "--channel", "dev")
    assert res.returncode == 1
    _one_error_line(res, f"build {ref} is not signed, and this home trusts signing keys")
    res = golden(home, "--json", "keys", "sign-builds", "base")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [{"image": "base", "build_id": baked_base.build_id, "key_id": kid,
                                       "signed_now": True}]

    # signed: it publishes, promotes and serves
    assert golden(home, "publish", "base", baked_base.build_id, "--channel", "dev").returncode == 0
    assert golden(home, "promote", "base", "--from", "dev", "--to", "staging").returncode == 0
    write_inventory(tmp_path / "inventory.yml", {"node1": (MAC, "base@dev")})
    serve = start_golden_serve(home, tmp_path / "inventory.yml", tmp_path / "serve.log", extra=["-v"])
    try:
        code, script = _get(f"{serve.url}/boot/{MAC}.ipxe")
        assert code == 200 and f"golden.build={baked_base.build_id}" in script and "\nkernel " in script, script
        assert _get(f"{serve.url}/store/{ref}/vmlinuz")[0] == 200

        # one byte of the manifest changed: the rootfs sha256 it names, as someone pointing it elsewhere would
        manifest = (folder / MANIFEST).read_bytes()
        sha = baked_base.manifest.artifacts["rootfs.squashfs"].sha256
        forged = manifest.replace(sha.encode(), (sha[:-1] + ("0" if sha[-1] != "0" else "1")).encode())
        assert forged != manifest and len(forged) == len(manifest)
        (folder / MANIFEST).unlink()  # a new file, never a write through the cache's hard links
        (folder / MANIFEST).write_bytes(forged)

        reason = f"build {ref}: manifest signature does not verify (key {kid}): edited after signing?"
        res = golden(home, "publish", "base", baked_base.build_id, "--channel", "prod")
        assert res.returncode == 1
        _one_error_line(res, reason)
        res = golden(home, "promote", "base", "--from", "dev", "--to", "prod")
        assert res.returncode == 1
        _one_error_line(res, reason)
        res = golden(home, "publish", "base", baked_base.build_id, "--channel", "prod", "--allow-unsigned")
        assert res.returncode == 1  # --allow-unsigned is for no signature, never for a bad one
        _one_error_line(res, reason)

        code, script = _get(f"{serve.url}/boot/{MAC}.ipxe")
        assert code == 200 and "kernel" not in script and "exit" in script, script
        assert _get(f"{serve.url}/store/{ref}/vmlinuz")[0] == 404
        assert _get(f"{serve.url}/a/{baked_base.manifest.artifacts['initrd'].sha256}")[0] == 404
        log = (tmp_path / "serve.log").read_text()
        assert any("node1" in line and reason in line for line in log.splitlines()), log[-3000:]
        history = json.loads(golden(home, "--json", "images", "--history", "base").stdout or "[]")
        assert "prod" not in json.dumps(history)
    finally:
        serve.stop()
