"""The fleet page in a real browser: Debian's chromium, headless, reads the DOM and takes a screenshot.

A fleet with one host in each state (in-sync, pending, stale, drifted, tainted, failed,
never-reported, no-build) over two racks, its state written through the normal paths (agent
reports via ``accept_report``, the reimage journal, channel verbs). ``golden report`` writes the
file and ``golden serve`` serves it at ``/fleet``; chromium loads both with every host name
resolving nowhere (the page must need no network), a probe script appended to a copy records
each cell's *computed* colour and clicks the tainted cell, and ``--dump-dom`` hands the DOM back.
The screenshot stays in the test's folder (``fleet.png``).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.fixtures.boot import make_build
from toolkit.boot.evidence import accept_report, issue_boot_token
from toolkit.boot.running import start_in_thread
from toolkit.boot.server import ServerConfig, make_server
from toolkit.cli import main
from toolkit.core.config import StaleConfig
from toolkit.core.run import run
from toolkit.fleet.fleet import Fleet
from toolkit.fleet.page import COLOURS
from toolkit.rollout.journal import Journal, Phase, Step
from toolkit.state.db import SQLiteStateDB
from toolkit.store import channels
from toolkit.store.artifacts import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SECRET = b"p" * 64
NOW_ISO = datetime.now(UTC).replace(microsecond=0).isoformat()
HOSTS = {  # name: (rack, mac, image)
    "n-in-sync": ("rack1", "52:54:00:15:0f:01", "base@prod"),
    "n-pending": ("rack1", "52:54:00:15:0f:02", "base@dev"),
    "n-stale": ("rack1", "52:54:00:15:0f:03", "base@prod"),
    "n-drifted": ("rack1", "52:54:00:15:0f:04", "base@prod"),
    "n-tainted": ("rack2", "52:54:00:15:0f:05", "base@prod"),
    "n-failed": ("rack2", "52:54:00:15:0f:06", "base@prod"),
    "n-never-reported": ("rack2", "52:54:00:15:0f:07", "base@prod"),
    "n-no-build": ("rack2", "52:54:00:15:0f:08", "base@nowhere"),
}
PROBE = """<script>
document.querySelectorAll('.cell').forEach(c => c.setAttribute('data-computed', getComputedStyle(c).backgroundColor));
document.querySelector('.cell[data-host="n-tainted"]').click();
const d = document.getElementById('details');
d.setAttribute('data-visible', getComputedStyle(d).display);
d.setAttribute('data-text', d.querySelector('pre').textContent);
</script></body>"""


def write_inventory(path: Path) -> Path:
    racks: dict[str, list[str]] = {}
    for name, (rack, mac, image) in HOSTS.items():
        racks.setdefault(rack, []).append(f"        {name}:\n          mac: \"{mac}\"\n          image: \"{image}\"\n")
    path.write_text("all:\n  children:\n" + "".join(f"    {r}:\n      hosts:\n" + "".join(hs)
                                                     for r, hs in racks.items()))
    return path


def report(fleet: Fleet, name: str, build: str, drift: dict[str, str] | None = None,
           logins: list[str] | None = None) -> None:
    mac = HOSTS[name][1]
    fleet.arm_attempts([(name, hashlib.sha256(name.encode()).hexdigest()[:16], build)], 600)  # a reimage's boot
    token = issue_boot_token(fleet, SECRET, mac, name, build, "10.0.0.5", "base").token
    accept_report(fleet, {"mac": mac, "build_id": build, "image": "base", "token": token, "hostname": name,
                          "booted_at": NOW_ISO, "uptime_s": 5.0, "drift": sorted(drift or {}),
                          "drift_kinds": drift or {}, "agent_version": "1.1.0",
                          "logins": [{"at": NOW_ISO, "line": x} for x in logins or []]}, SECRET, "10.0.0.5")


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> tuple[Path, Path, Fleet]:
    proj = tmp_path / "project"
    (proj / "images").mkdir(parents=True)
    (proj / "roles").mkdir()
    (proj / "golden.yaml").write_text("stale:\n  max_age: 14d\n  max_security_behind: 0\n")
    home = tmp_path / "home"
    store = Store(home / "store")
    old = {"openssl": "3.0.11-1~deb12u2", "bash": "5.2.15-2+b2"}
    make_build(store, "base", "b1", age_rank=1, packages=old, package_archives={"openssl": "bookworm"},
               created_at=(datetime.now(UTC) - timedelta(days=3)).isoformat())
    new = {**old, "openssl": "3.0.15-1~deb12u1"}
    for build in ("b2", "b3"):
        make_build(store, "base", build, age_rank=2, packages=new, package_archives={"openssl": "bookworm-security"},
                   created_at=datetime.now(UTC).isoformat())
    db = SQLiteStateDB(home / "state.db")
    inv = write_inventory(tmp_path / "inventory.yml")
    fleet = Fleet(db, store, inv)
    channels.publish(db, store, "base", "b1", "prod", user="test")
    report(fleet, "n-stale", "b1")
    channels.publish(db, store, "base", "b2", "prod", user="test")
    channels.publish(db, store, "base", "b3", "dev", user="test")
    report(fleet, "n-in-sync", "b2")
    report(fleet, "n-pending", "b2")
    report(fleet, "n-drifted", "b2", drift={"/etc/ssh/sshd_config": "modified", "/usr/local/bin/x": "added"})
    report(fleet, "n-tainted", "b2", logins=["Accepted password for root from 203.0.113.9 port 4711 ssh2"])
    report(fleet, "n-failed", "b2")
    journal = Journal(db)
    journal.create_run("r-1", "alice", "rack2", "base", "b2", {"waves": [["n-failed"]]})
    journal.record("r-1", "n-failed", 0, 1, Step.POWER, Phase.FAILED, "BMC unreachable")
    monkeypatch.setenv("GOLDEN_PROJECT", str(proj))
    monkeypatch.setenv("GOLDEN_INVENTORY", str(inv))
    return home, tmp_path, fleet


class Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.details: dict[str, str] = {}
        self.racks: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "cell" in a.get("class", "").split():
            self.cells.append(a)
        if a.get("id") == "details":
            self.details = a
        if a.get("class") == "rack":
            self.racks.append(a["data-rack"])


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def chromium(tmp: Path, *args: str) -> str:
    profile = tmp / "chromium-profile"
    argv = [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", *args]  # no name resolves: no network
    return run(argv, capture=True, timeout=120).stdout


def check_dom(dom: str) -> None:
    parsed = Cells()
    parsed.feed(dom)
    assert parsed.racks == ["rack1", "rack2"]
    assert len(parsed.cells) == len(HOSTS)
    states = {c["data-host"]: c["data-state"] for c in parsed.cells}
    assert states == {name: name.removeprefix("n-") for name in HOSTS}
    for c in parsed.cells:  # the colour the browser computed, per state
        assert c["data-computed"] == rgb(COLOURS[c["data-state"]]), c
    assert len({c["data-computed"] for c in parsed.cells}) == len(HOSTS)
    assert parsed.details["data-visible"] == "block"
    text = parsed.details["data-text"]
    assert "n-tainted (tainted)" in text and "TAINTED: login without a break-glass certificate: root logged in " \
        "from 203.0.113.9" in text and "with a password" in text


def test_fleet_page_in_headless_chromium(project, capsys) -> None:
    home, tmp, fleet = project
    out = tmp / "fleet.html"
    assert main(["--home", str(home), "report", "--out", str(out)]) == 0, capsys.readouterr().err
    page = out.read_text()
    assert not re.search(r"(?:src|href)\s*=|https?://|@import|url\(", page), "the page must need nothing outside it"
    probed = tmp / "probed.html"
    probed.write_text(page.replace("</body>", PROBE))
    check_dom(chromium(tmp, "--dump-dom", probed.as_uri()))

    # The drifted host's paths and the stale host's reason are in the page's data for its panel.
    assert "/etc/ssh/sshd_config" in page and "openssl 3.0.11-1~deb12u2 -\\u003e 3.0.15-1~deb12u1" in page

    shot = tmp / "fleet.png"
    chromium(tmp, f"--screenshot={shot}", "--window-size=1280,900", out.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")

    # golden serve has the same page live at /fleet.
    server = make_server("127.0.0.1:0", ServerConfig(fleet=fleet, store=fleet.store, secret=SECRET,
                                                     page_policy=StaleConfig(max_age="14d", max_security_behind=0)))
    start_in_thread(server)
    try:
        host, port = server.server_address[:2]
        conn = http.client.HTTPConnection(str(host), port, timeout=10)
        conn.request("GET", "/fleet")
        resp = conn.getresponse()
        live = resp.read().decode()
        assert (resp.status, resp.getheader("Content-Type")) == (200, "text/html; charset=utf-8")
        served = tmp / "served.html"
        served.write_text(live.replace("</body>", PROBE))
        check_dom(chromium(tmp, "--dump-dom", served.as_uri()))
        dom = chromium(tmp, "--dump-dom", f"http://127.0.0.1:{port}/fleet")
        assert dom.count('class="cell"') == len(HOSTS)
    finally:
        server.shutdown()
        server.server_close()


def _visible(dom: str) -> list[str]:
    parsed = Cells()
    parsed.feed(dom)
    return sorted(c["data-host"] for c in parsed.cells if "hidden" not in c.get("class", "").split())


def test_fleet_page_filters_searches_and_shows_report_age(project, capsys) -> None:
    """In headless chromium: ?state= and ?rack= filter the cells, ?q= finds a host by name; every cell
    says how long ago its host reported."""
    home, tmp, _ = project
    out = tmp / "fleet.html"
    assert main(["--home", str(home), "report", "--out", str(out)]) == 0, capsys.readouterr().err
    assert _visible(chromium(tmp, "--dump-dom", out.as_uri())) == sorted(HOSTS)
    assert _visible(chromium(tmp, "--dump-dom", out.as_uri() + "?state=failed")) == ["n-failed"]
    assert _visible(chromium(tmp, "--dump-dom", out.as_uri() + "?rack=rack2")) == \
        sorted(h for h, (rack, _, _) in HOSTS.items() if rack == "rack2")
    assert _visible(chromium(tmp, "--dump-dom", out.as_uri() + "?q=TAINT")) == ["n-tainted"]
    assert _visible(chromium(tmp, "--dump-dom", out.as_uri() + "?state=in-sync&rack=rack2")) == []
    dom = chromium(tmp, "--dump-dom", out.as_uri())
    assert re.search(r'data-host="n-never-reported"[^>]*title="[^"]*last report never"', dom)
    assert re.search(r'data-host="n-in-sync"[^>]*title="[^"]*last report \d+[smhd] ago"', dom)


def test_served_fleet_page_needs_the_token_and_refreshes_itself(project) -> None:
    import base64

    from toolkit.core.secret import Secret

    _, _, fleet = project
    server = make_server("127.0.0.1:0", ServerConfig(fleet=fleet, store=fleet.store, secret=SECRET,
                                                     fleet_token=Secret("s3cret-fleet")))
    start_in_thread(server)
    try:
        host, port = server.server_address[:2]

        def get(headers: dict[str, str]) -> tuple[int, str, str | None]:
            conn = http.client.HTTPConnection(str(host), port, timeout=10)
            conn.request("GET", "/fleet", headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(), resp.getheader("WWW-Authenticate")

        status, body, challenge = get({})
        assert status == 401 and challenge and challenge.startswith("Basic") and "n-failed" not in body
        assert get({"Authorization": "Bearer wrong"})[0] == 401
        assert get({"Authorization": "Bearer s3cret-fleet"})[0] == 200
        basic = base64.b64encode(b"admin:s3cret-fleet").decode()
        status, body, _ = get({"Authorization": f"Basic {basic}"})
        assert status == 200 and '<meta http-equiv="refresh" content="30">' in body and body.count('class="cell"') == 8
    finally:
        server.shutdown()
        server.server_close()
