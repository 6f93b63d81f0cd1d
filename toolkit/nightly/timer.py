"""``golden nightly --install-timer``: a systemd service and timer that run the same command every night.

Rendering is pure (values checked first: only characters that need no quoting in a unit line, no
``%`` specifiers); writing puts both files into a unit folder atomically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from toolkit.core.errors import InputError
from toolkit.core.fsutil import atomic_write

TEMPLATES = Path(__file__).resolve().parent / "templates"
SERVICE = "golden-nightly.service"
TIMER = "golden-nightly.timer"
_AT_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_UNIT_VALUE_RE = re.compile(r"^[A-Za-z0-9_./@:+,=-]+$")  # as toolkit.boot.pxe: no spaces, %, newlines


@dataclass(frozen=True)
class TimerSettings:
    """What the nightly's systemd units run: golden, the project and home, the time."""
    golden: str  # absolute path of the golden executable
    project: Path
    home: Path
    at: str = "02:00"
    args: tuple[str, ...] = ()  # the nightly's own options, e.g. --promote-to staging
    inventory: str | None = None
    timeout: str = "6h"


def check_at(value: str) -> str:
    """``value``; InputError unless it is HH:MM."""
    if not _AT_RE.match(value):
        raise InputError(f"--at {value!r}: expected HH:MM (24-hour), e.g. 02:00")
    return value


def _check(s: TimerSettings) -> None:
    check_at(s.at)
    for flag, v in (("golden executable", s.golden), ("--project", str(s.project)), ("--home", str(s.home)),
                    ("--inventory", s.inventory or "/x")):
        if not v.startswith("/"):
            raise InputError(f"{flag} must be an absolute path for the systemd unit, got {v!r}")
    for flag, v in (("golden executable", s.golden), ("--project", str(s.project)), ("--home", str(s.home)),
                    ("--inventory", s.inventory or "x"), *(("nightly option", a) for a in s.args)):
        if not _UNIT_VALUE_RE.match(v):
            raise InputError(f"{flag} {v!r}: only letters, digits and _./@:+,=- fit in the systemd unit")


def render_units(s: TimerSettings) -> dict[str, str]:
    """The service and timer unit texts, by file name."""
    _check(s)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)  # noqa: S701 - not HTML
    values = {"golden": s.golden, "project": str(s.project), "home": str(s.home), "at": s.at,
              "args": list(s.args), "inventory": s.inventory, "timeout": s.timeout}
    return {name: env.get_template(f"{name}.j2").render(**values) for name in (SERVICE, TIMER)}


def write_units(s: TimerSettings, unit_dir: Path) -> list[Path]:
    """Write the units into ``unit_dir``; their paths."""
    units = render_units(s)
    unit_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in units.items():
        atomic_write(unit_dir / name, text)
        out.append(unit_dir / name)
    return out
