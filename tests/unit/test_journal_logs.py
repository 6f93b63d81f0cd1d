"""Log lines for operators: a level on every line; under systemd (JOURNAL_STREAM names our stderr) every
line starts with its syslog priority and carries no timestamp of its own (journald adds one)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.core.logs import setup_logging

GOLDEN = str(Path(sys.executable).parent / "golden")
STAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d")


def _journal_id(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def _emit_all_levels() -> None:
    log = logging.getLogger("golden.test")
    log.debug("debug line")
    log.info("info line")
    log.warning("warning line\nsecond line of it")
    log.error("error line")
    logging.getLogger("pyghmi.vendor").debug("vendor plugin noise")  # a library's chatter stays out even at -vv


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_under_journald_every_line_has_its_priority_and_no_timestamp(tmp_path, monkeypatch):
    out = tmp_path / "stderr"
    with open(out, "w") as stream:
        monkeypatch.setenv("JOURNAL_STREAM", _journal_id(out))
        setup_logging(logging.DEBUG, stream)
        _emit_all_levels()
    lines = out.read_text().splitlines()
    assert lines == ["<7>DEBUG golden.test: debug line", "<6>INFO golden.test: info line",
                     "<4>WARNING golden.test: warning line", "<4>second line of it", "<3>ERROR golden.test: error line"]


def test_elsewhere_lines_have_a_level_and_a_utc_timestamp_when_verbose(tmp_path, monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = tmp_path / "stderr"
    with open(out, "w") as stream:
        setup_logging(logging.DEBUG, stream)
        _emit_all_levels()
    lines = out.read_text().splitlines()
    assert len(lines) == 5 and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR) ", ln)
                                   for ln in lines if not ln.startswith("second")), lines


def test_journal_stream_of_another_file_is_not_ours(tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.write_text("")
    monkeypatch.setenv("JOURNAL_STREAM", _journal_id(other))  # inherited from a parent, not our stderr
    out = tmp_path / "stderr"
    with open(out, "w") as stream:
        setup_logging(logging.WARNING, stream)
        logging.getLogger("golden.test").warning("plain")
    assert out.read_text() == "WARNING golden.test: plain\n"


def test_a_failing_verb_under_journald_prefixes_its_error_lines(tmp_path):
    out = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLDEN_", "ANSIBLE_"))}
    env.update(GOLDEN_HOME=str(tmp_path / "home"), ANSIBLE_CONFIG=str(tmp_path / "none.cfg"))
    with open(out, "w") as stream:
        env["JOURNAL_STREAM"] = _journal_id(out)
        rc = subprocess.run([GOLDEN, "power", "all", "status"], stderr=stream, stdout=subprocess.DEVNULL, env=env,
                            cwd=tmp_path, timeout=60).returncode
    lines = out.read_text().splitlines()
    assert rc == 2 and len(lines) == 2, lines
    assert lines[0].startswith("<3>golden: error: no inventory") and lines[1].startswith("<3>hint: ")
    assert not any(STAMP.search(ln) for ln in lines)
