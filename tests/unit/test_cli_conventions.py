"""Ops conventions: --version, global options after the verb, -v, help with examples, shell completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import __version__
from toolkit.cli import main

GOLDEN = str(Path(sys.executable).parent / "golden")


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"golden {__version__}"


@pytest.mark.parametrize("argv", [["--json", "runs"], ["runs", "--json"], ["runs", "--json", "--limit", "5"]])
def test_json_before_or_after_the_verb(tmp_path, capsys, argv) -> None:
    assert main(["--home", str(tmp_path), *argv]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_json_errors_after_the_verb_are_json(tmp_path, capsys) -> None:
    assert main(["--home", str(tmp_path), "fleet", "--json", "-i", str(tmp_path / "nope.yml")]) == 2
    out = json.loads(capsys.readouterr().out)
    assert "nope.yml" in out["message"] and out["error"].endswith("Error")  # the one-line error, as JSON


def test_help_shows_options_and_examples(capsys) -> None:
    assert main(["help", "reimage"]) == 0
    out = capsys.readouterr().out
    assert "--wave-size" in out and "examples:" in out and "golden reimage --resume" in out
    assert main(["help", "nope"]) == 2


def test_interrupt_says_what_it_left(monkeypatch, tmp_path, capsys) -> None:
    import toolkit.cli.publish as publish

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(publish, "publish", interrupted)
    assert main(["--home", str(tmp_path), "publish", "base", "b1", "--channel", "dev"]) == 130
    err = capsys.readouterr().err
    assert "publish interrupted: its transaction was rolled back; the channel is unchanged" in err
    assert "partial work was rolled back" not in err


def test_shell_completion_through_argcomplete(tmp_path) -> None:
    out = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n",
           "COMP_LINE": "golden reimage --can", "COMP_POINT": str(len("golden reimage --can"))}
    subprocess.run([GOLDEN], env=env, check=True, timeout=60)
    assert out.read_text().split() == ["--canary"]
