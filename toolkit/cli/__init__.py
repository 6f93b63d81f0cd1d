"""The ``golden`` command line: parse, call one library function, render, map errors to exit codes.

Each verb lives in its own module here with ``register(subparsers)``; a module adds its parser
and sets ``func`` to a handler ``(args, ctx) -> int``. No logic lives in this package.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence

from toolkit.cli.output import Context
from toolkit.core.errors import GoldenError, Interrupted

# Modules under toolkit.cli that contribute verbs, in help order.
COMMAND_MODULES = (
    "validate", "bake", "images", "publish", "serve", "pxe", "fleet",
    "power", "bootdev", "lab", "reimage", "runs", "role",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="golden",
        description="Bake golden images, netboot them, and reimage bare-metal racks through their BMCs.",
    )
    parser.add_argument("--debug", action="store_true", help="log every command run; show tracebacks")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout, no progress")
    parser.add_argument("--project", metavar="DIR", help="project folder with images/ and roles/")
    parser.add_argument("--home", metavar="DIR", help="state folder (store, runs, fleet DB); env GOLDEN_HOME")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"toolkit.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"toolkit.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def _on_sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM into the same unwinding path as Ctrl-C so rollback steps run.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(message)s" if not args.debug else "%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    ctx = Context(json=args.json, debug=args.debug, project=args.project, home=args.home)
    try:
        return int(args.func(args, ctx) or 0)
    except KeyboardInterrupt:
        err: GoldenError = Interrupted("interrupted; partial work was rolled back")
        return ctx.fail(err)
    except GoldenError as exc:
        if args.debug:
            logging.getLogger("golden").exception("failed")
        return ctx.fail(exc)


if __name__ == "__main__":
    sys.exit(main())
