"""Nightly decision, upstream index parsing and report rendering, in tables (no network, no bake)."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from toolkit.nightly.decide import Action, changed_inputs, decide
from toolkit.nightly.notify import post_report
from toolkit.nightly.report import (
    Gate,
    ImageReport,
    NightlyReport,
    Outcome,
    console_excerpt,
    from_dict,
    render_html,
    render_markdown,
    to_dict,
)
from toolkit.nightly.upstream import (
    Suite,
    Upgrade,
    UpstreamError,
    index_versions,
    merge_candidates,
    pending_upgrades,
    pick_index,
    read_upstream,
    release_files,
    suites_for,
)

INPUTS = {"spec_sha256": "s1", "roles": {"web": "r1", "golden_agent": "a1"}, "elements": {"golden": "e1"},
          "dib_version": "3.39", "snapshot": "T1", "recipe": 4}
SEC = Upgrade("openssl", "3.0.15-1~deb12u1", "3.0.16-1~deb12u1", "bookworm-security")
UPD = Upgrade("tzdata", "2024a-0+deb12u1", "2025b-0+deb12u1", "bookworm-updates")


def _with(**kw):
    return {**INPUTS, **kw}


# (plan_id, plan inputs, dev build, dev inputs, plan stored, upgrades) -> action, words in the reasons
DECIDE_CASES = [
    ("b1", INPUTS, "b1", INPUTS, True, [], Action.NO_CHANGE, "equal those of web@dev (b1)"),
    ("b1", INPUTS, "b1", INPUTS, True, [SEC], Action.BAKE, "1 upstream package update(s), 1 from a security"),
    ("b1", INPUTS, "b1", INPUTS, True, [UPD, SEC], Action.BAKE, "openssl 3.0.15-1~deb12u1 -> 3.0.16-1~deb12u1"),
    ("b2", _with(roles={"web": "r2", "golden_agent": "a1"}), "b1", INPUTS, False, [], Action.BAKE,
     "changed since web@dev (b1): role web"),
    ("b2", _with(spec_sha256="s2", dib_version="3.40"), "b1", INPUTS, False, [], Action.BAKE, "spec, DIB version"),
    ("b2", _with(snapshot="T2"), "b1", INPUTS, True, [], Action.REUSE, "build b2 of the current inputs is already"),
    ("b1", INPUTS, None, None, False, [], Action.BAKE, "web@dev points at no build yet"),
    ("b1", INPUTS, None, None, True, [], Action.REUSE, "build b1 of the current inputs is stored"),
    ("b1", INPUTS, None, None, True, [SEC], Action.BAKE, "1 upstream package update(s)"),
]


@pytest.mark.parametrize("plan_id, planned, dev, dev_inputs, stored, ups, action, words", DECIDE_CASES)
def test_decide(plan_id, planned, dev, dev_inputs, stored, ups, action, words) -> None:
    d = decide("web", plan_id, planned, dev, dev_inputs, stored, ups)
    assert d.action is action
    assert any(words in r for r in d.reasons), d.reasons


@pytest.mark.parametrize("planned, expected", [
    (INPUTS, []),
    (_with(roles={"web": "r1"}), ["role golden_agent"]),
    (_with(roles={"web": "r1", "golden_agent": "a1", "new": "n"}), ["role new"]),
    (_with(elements={"golden": "e2"}, recipe=5, snapshot="T2"), ["DIB elements", "bake recipe", "package snapshot"]),
])
def test_changed_inputs(planned, expected) -> None:
    assert changed_inputs(planned, INPUTS) == expected


INRELEASE = """-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Origin: Debian
Suite: stable-security
Codename: bookworm-security
MD5Sum:
 0123456789abcdef0123456789abcdef 100 main/binary-amd64/Packages
SHA256:
 {plain} 1000 main/binary-amd64/Packages
 {xz} 200 main/binary-amd64/Packages.xz
 {gz} 300 main/binary-amd64/Packages.gz
 {other} 50 contrib/binary-amd64/Packages.xz
-----BEGIN PGP SIGNATURE-----
"""


def test_release_files_and_pick_index() -> None:
    text = INRELEASE.format(plain="a" * 64, xz="b" * 64, gz="c" * 64, other="d" * 64)
    files = release_files(text)
    assert files["main/binary-amd64/Packages.xz"] == ("b" * 64, 200)
    assert "0123456789abcdef0123456789abcdef" not in {v[0] for v in files.values()}  # MD5 section ignored
    assert pick_index(files, "main") == ("main/binary-amd64/Packages.xz", "b" * 64, "a" * 64)
    assert pick_index({k: v for k, v in files.items() if not k.endswith(".xz")}, "main")[0].endswith(".gz")
    assert pick_index(files, "non-free") is None


PACKAGES = """Package: bash
Version: 5.2.15-2+b2
Description: shell
 long text: with a colon

Package: openssl
Version: 3.0.15-1~deb12u1

Package: openssl
Version: 3.0.11-1~deb12u2
"""


def test_index_versions_keeps_the_highest() -> None:
    assert index_versions(PACKAGES) == {"bash": "5.2.15-2+b2", "openssl": "3.0.15-1~deb12u1"}


# installed, candidates -> upgrades (security first)
PENDING_CASES = [
    ({"bash": "5.2.15-2+b2"}, {"bash": ("5.2.15-2+b2", "bookworm")}, []),
    ({"bash": "5.2.15-2+b2"}, {"bash": ("5.2.15-2+b7", "bookworm-updates")},
     [Upgrade("bash", "5.2.15-2+b2", "5.2.15-2+b7", "bookworm-updates")]),
    ({"libc6:amd64": "2.36-9+deb12u7"}, {"libc6": ("2.36-9+deb12u9", "bookworm-security")},
     [Upgrade("libc6:amd64", "2.36-9+deb12u7", "2.36-9+deb12u9", "bookworm-security")]),
    ({"golden-local": "1.0"}, {}, []),  # offered by no suite: apt leaves it alone
    ({"x": "2.0"}, {"x": ("1.0", "bookworm")}, []),  # the archive went back: apt does not downgrade
    ({"a": "1", "z": "1"}, {"a": ("2", "bookworm-updates"), "z": ("2", "bookworm-security")},
     [Upgrade("z", "1", "2", "bookworm-security"), Upgrade("a", "1", "2", "bookworm-updates")]),
]


@pytest.mark.parametrize("installed, candidates, expected", PENDING_CASES)
def test_pending_upgrades(installed, candidates, expected) -> None:
    assert pending_upgrades(installed, candidates) == expected


def test_merge_candidates_picks_the_highest_suite_version() -> None:
    merged = merge_candidates({"bookworm": {"a": "1.0", "b": "1.0"}, "bookworm-security": {"a": "1.0+deb12u1"}})
    assert merged == {"a": ("1.0+deb12u1", "bookworm-security"), "b": ("1.0", "bookworm")}


def test_suites_follow_the_bake_sources() -> None:
    assert [s.name for s in suites_for("bookworm", "http://m/debian", "http://m/sec")] == \
        ["bookworm", "bookworm-updates", "bookworm-security"]
    assert [s.mirror for s in suites_for("bookworm", "http://m/debian", None)] == ["http://m/debian"] * 2


class _Mirror:
    """A fake fetch over a dict of URL -> bytes that counts what was fetched."""

    def __init__(self, release_text: dict[str, str], packages: dict[str, str]) -> None:
        self.files: dict[str, bytes] = {}
        self.fetched: list[str] = []
        for suite, text in packages.items():
            xz = lzma.compress(text.encode())
            gz = gzip.compress(text.encode())
            self.files[f"http://m/dists/{suite}/main/binary-amd64/Packages.xz"] = xz
            self.files[f"http://m/dists/{suite}/InRelease"] = release_text.get(suite, INRELEASE.format(
                plain=hashlib.sha256(text.encode()).hexdigest(), xz=hashlib.sha256(xz).hexdigest(),
                gz=hashlib.sha256(gz).hexdigest(), other="d" * 64)).encode()

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        if url not in self.files:
            raise UpstreamError(f"could not fetch {url}: 404")
        return self.files[url]


def test_read_upstream_caches_indexes_by_sha256(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("toolkit.nightly.upstream._verify", lambda data, url, scratch: True)
    mirror = _Mirror({}, {"bookworm": PACKAGES, "bookworm-security": "Package: openssl\nVersion: 3.0.16-1~deb12u1\n"})
    suites = [Suite("http://m", "bookworm"), Suite("http://m", "bookworm-security")]
    state = read_upstream(suites, tmp_path, fetch=mirror)
    assert state.candidates["openssl"] == ("3.0.16-1~deb12u1", "bookworm-security")
    assert sum(u.endswith(".xz") for u in mirror.fetched) == 2
    mirror.fetched.clear()
    again = read_upstream(suites, tmp_path, fetch=mirror)
    assert again == state and all(u.endswith("InRelease") for u in mirror.fetched)  # indexes from the cache


def test_read_upstream_refuses_an_index_whose_sha256_differs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("toolkit.nightly.upstream._verify", lambda data, url, scratch: True)
    mirror = _Mirror({"bookworm": INRELEASE.format(plain="a" * 64, xz="b" * 64, gz="c" * 64, other="d" * 64)},
                     {"bookworm": PACKAGES})
    with pytest.raises(UpstreamError, match="sha256 differs"):
        read_upstream([Suite("http://m", "bookworm")], tmp_path, fetch=mirror)


def _report(*images: ImageReport) -> NightlyReport:
    return NightlyReport("20261202T020000Z-nightly-abcdef", 1_764_640_800.0, 1_764_641_000.0, {}, list(images))


FAILED = ImageReport("web", Outcome.FAILED, "b1", "b3", ["changed since web@dev (b1): role golden_agent"],
                     [Gate("bake", True, 200.0), Gate("bake-checks", True, 0.0),
                      Gate("lab-boot", False, 900.0, "reimage run r1: 1 host(s) failed",
                           "[FAILED] Failed to start golden-agent.service <script>")])
REBUILT = ImageReport("web", Outcome.PROMOTED, "b1", "b2", ["changed since web@dev (b1): role web"],
                      [Gate("bake", True, 200.0), Gate("lab-boot", True, 150.0)],
                      diff={"roles": [{"role": "web", "change": "changed", "old": "r1", "new": "r2"}],
                            "packages": [{"package": "openssl", "change": "upgraded", "old": "1", "new": "2",
                                          "archive": "bookworm-security", "security": True}],
                            "spec": [], "inputs": []},
                      published={"dev": "b2", "staging": "b2"})
SAME = ImageReport("base", Outcome.NO_CHANGE, "b0", "b0", ["inputs and packages equal those of base@dev (b0)"])


@pytest.mark.parametrize("images, status, code, summary", [
    ((SAME,), "succeeded", 0, "1 no change"),
    ((SAME, REBUILT), "succeeded", 0, "1 no change, 1 promoted"),
    ((SAME, FAILED), "failed", 1, "1 failed, 1 no change"),
    ((), "succeeded", 0, "no images"),
])
def test_report_status_and_exit_code(images, status, code, summary) -> None:
    r = _report(*images)
    assert (r.status, r.exit_code, r.summary()) == (status, code, summary)


def test_markdown_names_the_role_change_the_new_build_and_the_failed_gate() -> None:
    md = render_markdown(_report(REBUILT, FAILED))
    assert "| web | promoted | b1 | b2 |" in md
    assert "- role web: changed" in md and "web@staging -> b2" in md
    assert "| openssl | upgraded | 1 | 2 | bookworm-security | SECURITY |" in md
    assert "| web | failed | b1 | b3 | lab-boot |" in md
    assert "lab-boot failed; excerpt:" in md and "Failed to start golden-agent.service" in md


def test_html_is_one_escaped_page_without_external_assets() -> None:
    page = render_html(_report(REBUILT, FAILED))
    assert page.startswith("<!DOCTYPE html>") and "<script>" not in page and "&lt;script&gt;" in page
    assert "src=" not in page and "href=" not in page and "@import" not in page
    assert "Failed to start golden-agent.service" in page


def test_json_round_trip() -> None:
    r = _report(SAME, REBUILT, FAILED)
    data = json.loads(json.dumps(to_dict(r)))
    assert data["status"] == "failed" and [i["failed_gate"] for i in data["images"]] == [None, None, "lab-boot"]
    assert to_dict(from_dict(data)) == to_dict(r)


@pytest.mark.parametrize("text, expected", [
    ("a\nb\n\nc\n", "a\nb\nc"),
    ("[[0;1;31mFAILED[0m] Failed to start \x1b[0;1;39mgolden-agent.service\x1b[0m",
     "[FAILED] Failed to start golden-agent.service"),
    ("\r\n".join(f"line {n}" for n in range(50)), "\n".join(f"line {n}" for n in range(10, 50))),
    ("[FAILED] Failed to start x\n" + "\n".join(f"l{n}" for n in range(45)),
     "[FAILED] Failed to start x\n...\n" + "\n".join(f"l{n}" for n in range(5, 45))),
])
def test_console_excerpt(text, expected) -> None:
    assert console_excerpt(text) == expected


def test_notify_posts_the_json_report_to_a_local_receiver() -> None:
    got: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, self.headers["Content-Type"], body))
            self.send_response(204 if self.path == "/ok" else 500)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        body = json.dumps(to_dict(_report(SAME)))
        assert post_report(f"{base}/ok", body) is None
        assert post_report(f"{base}/broken", body) == "HTTP 500"
    finally:
        server.shutdown()
    assert got[0][0] == "/ok" and got[0][1] == "application/json"
    assert json.loads(got[0][2])["images"][0]["outcome"] == "no change"


def test_nightly_bake_waits_for_a_manual_bake_of_the_same_image(monkeypatch) -> None:
    """A person's `golden bake` holds the image's store lock: the nightly's bake waits, never races it."""
    from types import SimpleNamespace

    from toolkit.core.errors import LockedError
    from toolkit.nightly import pipeline

    calls: list[bool] = []

    def bake(settings, name, *, refresh=False, **kw):
        calls.append(refresh)
        if len(calls) < 3:
            raise LockedError(f"image {name!r} is locked by bake pid 1")
        return SimpleNamespace(build="the build")

    monkeypatch.setattr(pipeline, "bake_image", bake)
    monkeypatch.setattr(pipeline.time, "sleep", lambda s: None)
    assert pipeline._bake(None, "web") == "the build"
    assert calls == [True, True, True]  # always with refreshed packages


def test_bake_phases_become_nightly_log_lines_once_each() -> None:
    from toolkit.nightly.pipeline import _PhaseLog

    lines: list[str] = []
    log = _PhaseLog("web", lines.append)
    for phase in ("root.d/08-debootstrap", "root.d/08-debootstrap", "squashfs (zstd)"):
        log.phase(phase)
    assert lines == ["web: bake: root.d/08-debootstrap", "web: bake: squashfs (zstd)"]
