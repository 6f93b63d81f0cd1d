"""The node's install step (roles/installer/files/golden-install-boot): its command line, URLs and disks as
tables, and one whole run against a real HTTP server on 127.0.0.1 with a recording stand-in for golden-install."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fixtures.common import ROOT, load_script

STEP = load_script(ROOT / "roles" / "installer" / "files" / "golden-install-boot", "golden_install_boot")
SQUASH = "http://10.0.2.2:8080/store/base/b2/rootfs.squashfs"
PLAN = "http://10.0.2.2:8080/install/52:54:00:00:00:11.json"
TOKEN = "0" * 32 + ".1.cccccccccccccccc." + "f" * 64


def test_parse_cmdline_keeps_assignments_and_bare_words() -> None:
    assert STEP.parse_cmdline("boot=live  fetch=http://x/a=b quiet golden.token=t\n") == {
        "boot": "live", "fetch": "http://x/a=b", "quiet": "", "golden.token": "t"}


# (id, kernel command line, the parameters, or the message of the CmdlineError)
PARAMS = [
    ("no-install", f"boot=live fetch={SQUASH} golden.token={TOKEN}", None),
    ("install", f"boot=live fetch={SQUASH} golden.token={TOKEN} golden.install={PLAN}",
     STEP.BootParams(PLAN, TOKEN, SQUASH)),
    ("bare-install-word", f"fetch={SQUASH} golden.token={TOKEN} golden.install", "golden.install= must be an http"),
    ("install-with-a-query", f"fetch={SQUASH} golden.token={TOKEN} golden.install={PLAN}?x=1",
     "golden.install= must be an http(s) URL without a query"),
    ("install-of-a-file", f"fetch={SQUASH} golden.token={TOKEN} golden.install=file:///etc/passwd",
     "golden.install= must be an http"),
    ("no-token", f"fetch={SQUASH} golden.install={PLAN}", "without golden.token="),
    ("empty-token", f"fetch={SQUASH} golden.token= golden.install={PLAN}", "without golden.token="),
    ("no-fetch", f"golden.token={TOKEN} golden.install={PLAN}", "fetch= must be an http"),
]


@pytest.mark.parametrize(("cmdline", "expected"), [p[1:] for p in PARAMS], ids=[p[0] for p in PARAMS])
def test_boot_params(cmdline: str, expected: object) -> None:
    words = STEP.parse_cmdline(cmdline)
    if isinstance(expected, str):
        with pytest.raises(STEP.CmdlineError, match=expected.replace("(", r"\(").replace(")", r"\)")) as info:
            STEP.boot_params(words)
        assert info.value.code == 2
    else:
        assert STEP.boot_params(words) == expected


@pytest.mark.parametrize(("disks", "query"), [
    ([("vda", 21474836480)], {"token": [TOKEN], "disks": ["vda:21474836480"]}),
    ([("nvme0n1", 1), ("sda", 2)], {"token": [TOKEN], "disks": ["nvme0n1:1,sda:2"]}),
    ([], {"token": [TOKEN]}),  # no disk seen: the server falls back to the host's hardware facts
])
def test_plan_url_carries_token_and_disks(disks: list, query: dict) -> None:
    url = STEP.plan_url(PLAN, TOKEN, disks)
    assert url.startswith(PLAN + "?") and parse_qs(urlsplit(url).query) == query


@pytest.mark.parametrize(("url", "name", "expected"), [
    (SQUASH, "vmlinuz", "http://10.0.2.2:8080/store/base/b2/vmlinuz"),
    ("https://boot.example/store/base/b2/rootfs.squashfs", "initrd", "https://boot.example/store/base/b2/initrd"),
    ("http://[fd00::1]:80/a/rootfs.squashfs", "vmlinuz", "http://[fd00::1]:80/a/vmlinuz"),
])
def test_kernel_and_initrd_sit_next_to_the_squashfs(url: str, name: str, expected: str) -> None:
    assert STEP.sibling_url(url, name) == expected


@pytest.mark.parametrize(("name", "target"), [
    ("vda", True), ("sda", True), ("nvme0n1", True), ("mmcblk0", True),
    ("loop0", False), ("ram0", False), ("zram0", False), ("sr0", False), ("dm-0", False), ("md127", False),
    ("nbd0", False), ("fd0", False), ("", False),
])
def test_which_block_devices_are_install_targets(name: str, target: bool) -> None:
    assert STEP.is_install_target(name) is target


@pytest.mark.parametrize(("code", "body", "line"), [
    (403, b'{"accepted": false, "kind": "ended", "reason": "attempt x is over"}',
     "the boot server refused the install plan (403 ended): attempt x is over"),
    (409, b'{"accepted": false, "reason": "disk vda holds 1G", "hint": "lower disk_slot_size"}',
     "the boot server refused the install plan (409): disk vda holds 1G (lower disk_slot_size)"),
    (502, b"<html>bad gateway</html>", "the boot server answered 502 for the install plan"),
    (500, b'["not", "an object"]', "the boot server answered 500 for the install plan"),
])
def test_a_refusal_is_one_line_with_the_servers_reason(code: int, body: bytes, line: str) -> None:
    assert STEP.refusal_text(code, body) == line


def test_list_disks_reads_sizes_in_512_byte_sectors_and_skips_virtual_devices(tmp_path: Path) -> None:
    for name, sectors in (("vdb", "2048"), ("vda", "41943040"), ("loop0", "100"), ("sr0", "0"), ("vdc", "0"),
                          ("vdd", "junk")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "size").write_text(sectors + "\n")
    assert STEP.list_disks(str(tmp_path)) == [("vda", 41943040 * 512), ("vdb", 2048 * 512)]


def test_find_squashfs_takes_the_first_pattern_that_matches(tmp_path: Path) -> None:
    (tmp_path / "live").mkdir()
    assert STEP.find_squashfs((str(tmp_path / "live" / "*.squashfs"),)) is None
    (tmp_path / "live" / "rootfs.squashfs").write_bytes(b"x")
    (tmp_path / "other.squashfs").write_bytes(b"x")
    found = STEP.find_squashfs((str(tmp_path / "live" / "*.squashfs"), str(tmp_path / "*.squashfs")))
    assert found == str(tmp_path / "live" / "rootfs.squashfs")


# ---- one whole run ----

class _Files(http.server.BaseHTTPRequestHandler):
    """The boot server's side: a plan (or a refusal) and the build's files; records what was asked."""
    answers: dict[str, tuple[int, bytes]] = {}
    asked: list[str] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        code, body = self.answers.get(urlsplit(self.path).path, (404, b"not found"))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def files() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    _Files.answers, _Files.asked = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _node(tmp_path: Path, base: str, medium: bool) -> list[str]:
    """A node's files (command line, /sys/block, live-boot's medium, a recording golden-install); its argv."""
    (tmp_path / "cmdline").write_text(f"boot=live fetch={base}/store/base/b2/rootfs.squashfs golden.token={TOKEN} "
                                      f"golden.install={base}/install/52:54:00:00:00:11.json\n")
    (tmp_path / "sys" / "vda").mkdir(parents=True)
    (tmp_path / "sys" / "vda" / "size").write_text("41943040\n")
    (tmp_path / "medium").mkdir()
    if medium:
        (tmp_path / "medium" / "rootfs.squashfs").write_bytes(b"verified squashfs")
    installer = tmp_path / "golden-install"
    installer.write_text(f"#!{sys.executable}\nimport json, sys\n"
                         f"open({str(tmp_path / 'argv')!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                         "print(json.dumps({'slot': 'a', 'build': 'b2', 'verified': True}))\n")
    installer.chmod(0o755)
    return ["--cmdline", str(tmp_path / "cmdline"), "--work-dir", str(tmp_path / "work"), "--installer",
            str(installer), "--sys-block", str(tmp_path / "sys"), "--medium", str(tmp_path / "medium" / "*.squashfs"),
            "--no-reboot"]


def _serve_build(plan: tuple[int, bytes]) -> None:
    _Files.answers = {"/install/52:54:00:00:00:11.json": plan, "/store/base/b2/vmlinuz": (200, b"kernel"),
                      "/store/base/b2/initrd": (200, b"initrd"), "/store/base/b2/rootfs.squashfs": (200, b"fetched")}


@pytest.mark.parametrize("medium", [True, False], ids=["squashfs-kept-by-live-boot", "squashfs-fetched-again"])
def test_a_run_fetches_the_plan_and_files_and_runs_the_installer(tmp_path: Path, files: str, medium: bool,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _serve_build((200, b'{"format": 1}'))
    assert STEP.main(_node(tmp_path, files, medium)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"installed": True, "rebooting": False, "slot": "a", "build": "b2", "verified": True}
    argv = json.loads((tmp_path / "argv").read_text())
    work = tmp_path / "work"
    squashfs = tmp_path / "medium" / "rootfs.squashfs" if medium else work / "rootfs.squashfs"
    assert argv == ["--plan", str(work / "plan.json"), "--squashfs", str(squashfs), "--kernel", str(work / "vmlinuz"),
                    "--initrd", str(work / "initrd")]
    assert (work / "plan.json").read_bytes() == b'{"format": 1}' and (work / "initrd").read_bytes() == b"initrd"
    assert squashfs.read_bytes() == (b"verified squashfs" if medium else b"fetched")
    plan_query = parse_qs(urlsplit(_Files.asked[0]).query)
    assert plan_query == {"token": [TOKEN], "disks": [f"vda:{41943040 * 512}"]}
    assert any(p.endswith("rootfs.squashfs") for p in _Files.asked) is not medium


def test_a_refused_plan_is_one_line_exit_1_and_nothing_installed(tmp_path: Path, files: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _serve_build((403, b'{"accepted": false, "kind": "contested", "reason": "attempt c is contested"}'))
    assert STEP.main(_node(tmp_path, files, True)) == 1
    err = capsys.readouterr().err
    assert err == "golden-install-boot: the boot server refused the install plan (403 contested): " \
                  "attempt c is contested\n"
    assert not (tmp_path / "argv").exists() and len(_Files.asked) == 1


def test_a_failed_install_passes_its_line_on_and_exits_1(tmp_path: Path, files: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _serve_build((200, b"{}"))
    argv = _node(tmp_path, files, True)
    (tmp_path / "golden-install").write_text(f"#!{sys.executable}\nimport sys\n"
                                             "print('golden-install: slot a reads back sha256 x', file=sys.stderr)\n"
                                             "sys.exit(1)\n")
    assert STEP.main(argv) == 1
    assert capsys.readouterr().err == "golden-install-boot: golden-install: slot a reads back sha256 x\n"


def test_without_golden_install_it_does_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cmdline").write_text(f"boot=live fetch={SQUASH} golden.token={TOKEN}\n")
    assert STEP.main(["--cmdline", str(tmp_path / "cmdline"), "--work-dir", str(tmp_path / "work")]) == 0
    assert json.loads(capsys.readouterr().out)["installed"] is False
    assert not (tmp_path / "work").exists()


def test_an_unreadable_command_line_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert STEP.main(["--cmdline", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("golden-install-boot: cannot read ")
