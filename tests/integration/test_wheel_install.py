"""A plain (non-editable) install of the wheel serves boots and renders PXE configs from any folder.

The templates are package data (toolkit/boot/templates), so nothing may reach back into the
source tree: the wheel is built from a copy of the sources, installed into a fresh virtualenv,
and run from an unrelated folder with no project in sight.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build
from tests.fixtures.common import ROOT
from toolkit.core.run import kill_group, spawn
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MAC = "52:54:00:ee:00:01"


def _wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "toolkit", src / "toolkit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("golden-*.whl")
    return wheel


def _venv(tmp_path: Path, wheel: Path) -> Path:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    # The dependencies come from the test's own environment (read-only, and no editable golden in it:
    # .pth files of a directory added this way are not processed).
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (site / "golden-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_wheel_serves_and_renders_from_an_unrelated_folder(tmp_path: Path) -> None:
    venv = _venv(tmp_path, _wheel(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLDEN_", "PYTHON"))}
    home = tmp_path / "home"
    where = subprocess.run([venv / "bin" / "python", "-c", "import toolkit; print(toolkit.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(venv)), where  # the installed copy, not the source tree

    out = tmp_path / "pxe"
    render = subprocess.run([venv / "bin" / "golden", "--home", str(home), "pxe", "render", "--out", str(out),
                             "--server-url", "http://10.0.0.1", "--interface", "lo"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=60)
    assert render.returncode == 0, render.stderr
    assert "http://10.0.0.1/boot/" in (out / "tftp" / "golden.ipxe").read_text()  # rendered from package data
    assert "dhcp-range" in (out / "dnsmasq-proxydhcp.conf").read_text()
    assert (out / "nginx.conf").is_file()

    make_build(Store(home / "store"), "base", "b1")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(f'all:\n  hosts:\n    n1: {{mac: "{MAC}", image: "base@b1"}}\n')
    proc = spawn([venv / "bin" / "golden", "--json", "--home", str(home), "serve", "--listen", "127.0.0.1:0",
                  "-i", str(inventory)], cwd=elsewhere, env=env, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        text = b""
        while not text.rstrip().endswith(b"}"):  # the JSON document golden serve prints once it listens
            line = proc.stdout.readline()
            assert line, "golden serve exited before listening"
            text += line
        url = json.loads(text)["listening"]
        with urllib.request.urlopen(f"{url}/boot/{MAC}.ipxe", timeout=10) as resp:
            script = resp.read().decode()
        assert resp.status == 200 and "golden.build=b1" in script and script.startswith("#!ipxe")
        with urllib.request.urlopen(f"{url}/boot/52:54:00:99:99:99.ipxe", timeout=10) as resp:
            assert resp.status == 200 and "exit" in resp.read().decode()  # the unknown-machine template
    finally:
        kill_group(proc)
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")


def test_fresh_install_prints_nothing_on_stderr(tmp_path: Path) -> None:
    """``golden --version`` and plain commands (one that reads an inventory through ansible-core, which
    used to bring cryptography's DSA deprecation warning) write nothing on stderr."""
    venv = _venv(tmp_path, _wheel(tmp_path))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(f'all:\n  hosts:\n    n1: {{mac: "{MAC}"}}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLDEN_", "PYTHON", "ANSIBLE_"))}
    env["GOLDEN_HOME"] = str(tmp_path / "home")
    for argv in (["--version"], ["images"], ["inventory", "-i", str(inventory)], ["fleet", "-i", str(inventory)]):
        proc = subprocess.run([venv / "bin" / "golden", *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0 and proc.stderr == "", (argv, proc.stderr)
