"""golden.1, written from the argparse definitions themselves, so the manual cannot drift from the CLI.

``python -m toolkit.cli.manpage > docs/golden.1`` (scripts/manpage); tests/unit/test_docs.py fails
when the committed page differs from what this renders, and renders it with ``man -l``.
"""

from __future__ import annotations

import argparse
import os
import sys

from toolkit import __version__
from toolkit.core.envvars import ENVIRONMENT

GLOBAL = {"help", "debug", "json", "verbose"}  # on every verb; described once, under GLOBAL OPTIONS
WIDTH = "80"  # usage lines wrap at the terminal's width: a fixed one keeps the page reproducible


def _roff(text: str) -> str:
    """Text safe in roff: backslashes escaped, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _option(action: argparse.Action) -> str | None:
    if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
        return None
    if action.option_strings:
        names = ", ".join(f"\\fB{_roff(o)}\\fR" for o in action.option_strings)
        if action.nargs != 0:
            names += f" \\fI{_roff(str(action.metavar or action.dest.upper()))}\\fR"
    else:
        names = f"\\fI{_roff(str(action.metavar or action.dest))}\\fR"
    help_text = (action.help or "").replace("%%", "%")
    if "%(default)" in help_text:
        help_text = help_text % {"default": action.default}
    return f".TP\n{names}\n{_roff(help_text)}"


def _children(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, sp, helps.get(name, "")) for name, sp in action.choices.items()]
    return []


def _verb(path: str, parser: argparse.ArgumentParser, help_text: str, level: int) -> list[str]:
    out = [f".SS {_roff(path)}" if level == 1 else f".TP\n\\fB{_roff(path)}\\fR", _roff(help_text), ".PP",
           ".nf", _roff(parser.format_usage().strip().removeprefix("usage: ")), ".fi"]
    out += [o for a in parser._actions if a.dest not in GLOBAL and (o := _option(a))]
    if parser.epilog:
        out += [".PP", "Examples:", ".nf", _roff(parser.epilog.split("\n", 1)[1]), ".fi"]
    for name, sp, sub_help in _children(parser):
        out += _verb(f"{path} {name}", sp, sub_help, level + 1)
    return out


def render_manpage(parser: argparse.ArgumentParser) -> str:
    """The whole page: name, synopsis, global options, every verb with its options and examples, environment."""
    out = [f'.TH GOLDEN 1 "" "golden {__version__}" "User Commands"', ".SH NAME",
           "golden \\- bake golden images, netboot them, reimage bare\\-metal racks through their BMCs",
           ".SH SYNOPSIS", "\\fBgolden\\fR [\\fIGLOBAL OPTIONS\\fR] \\fIVERB\\fR [\\fIOPTIONS\\fR]",
           ".SH DESCRIPTION", _roff(parser.description or ""),
           "Host\\-selecting verbs take Ansible's \\fB\\-i\\fR, \\fB\\-l\\fR, \\fB\\-\\-vault\\-id\\fR and "
           "\\fB\\-\\-vault\\-password\\-file\\fR and select exactly what \\fBansible \\-\\-list\\-hosts\\fR selects. "
           "Durations take units (90s, 15m, 2h, 1d); a bare number is seconds. Exit status: 0 success, 1 a failed "
           "operation, 2 bad input, 130 interrupted.",
           ".SH GLOBAL OPTIONS"]
    out += [o for a in parser._actions if (o := _option(a))]
    out.append(".SH VERBS")
    for name, sp, help_text in _children(parser):
        out += _verb(f"golden {name}", sp, help_text, 1)
    out.append(".SH ENVIRONMENT")
    out += [f".TP\n\\fB{_roff(k)}\\fR\n{_roff(v)}" for k, v in ENVIRONMENT.items()]
    out += [".SH FILES", ".TP\n\\fBgolden.yaml\\fR\nthe project's settings; see docs/configuration.md",
            ".SH SEE ALSO", "\\fBansible\\fR(1), \\fBansible\\-inventory\\fR(1), docs/ in the golden source tree"]
    return "\n".join(out) + "\n"


def main() -> None:
    """Write docs/golden.1 from the CLI's own parsers (scripts/manpage)."""
    from toolkit.cli import build_parser

    os.environ["COLUMNS"] = WIDTH
    sys.stdout.write(render_manpage(build_parser()))


if __name__ == "__main__":
    main()
