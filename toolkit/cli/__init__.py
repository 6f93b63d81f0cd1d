"""The ``golden`` command line: parse, call one library function, render, map errors to exit codes.

Each verb lives in its own module here with ``register(subparsers)``; a module adds its parser
and sets ``func`` to a handler ``(args, ctx) -> int``, and may set ``interrupted`` to what a
Ctrl-C in that verb leaves behind. No logic lives in this package.

The global options (``--json``, ``--debug``, ``-v``) are accepted before or after the verb.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from toolkit import __version__
from toolkit.cli.hostopts import cmd_list_hosts
from toolkit.cli.output import Context
from toolkit.core.errors import GoldenError, Interrupted
from toolkit.core.logs import setup_logging
from toolkit.core.stop import clear_stop, request_stop

# Modules under toolkit.cli that contribute verbs, in help order.
COMMAND_MODULES = (
    "validate", "bake", "images", "diff", "publish", "serve", "pxe", "fleet", "drift", "hw", "breakglass", "report",
    "inventory", "power", "bootdev", "console", "lab", "reimage", "retire", "nightly", "runs", "role", "state", "keys",
    "help",
)


def _add_global_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--debug", action="store_true", default=default, help="log every command run; show tracebacks")
    parser.add_argument("--json", action="store_true", default=default,
                        help="machine-readable output on stdout, no progress")
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more log output on stderr: -v info, -vv debug")


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in dict.fromkeys(action.choices.values()):
                yield sp
                yield from _subparsers(sp)


_GLOBAL_WITH_VALUE = ("--project", "--home")


def verb_of(argv: Sequence[str]) -> str | None:
    """The verb on a command line (the first word that is no global option or its value)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _GLOBAL_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that verb's module is imported (each one costs imports at start)."""
    parser = argparse.ArgumentParser(
        prog="golden",
        description="Bake golden images, netboot them, and reimage bare-metal racks through their BMCs.",
    )
    parser.add_argument("--version", action="version", version=f"golden {__version__}")
    _add_global_options(parser, None)
    parser.add_argument("--project", metavar="DIR", help="project folder with images/ and roles/")
    parser.add_argument("--home", metavar="DIR", help="state folder (store, runs, fleet DB); env GOLDEN_HOME")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in (only,) if only in COMMAND_MODULES else COMMAND_MODULES:
        try:
            module = importlib.import_module(f"toolkit.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"toolkit.cli.{name}":
                continue
            raise
        module.register(sub)
    for sp in _subparsers(parser):
        # SUPPRESS: an option not given after the verb leaves the value given before it alone
        _add_global_options(sp, argparse.SUPPRESS)
    _add_examples(sub)
    return parser


def _add_examples(sub: argparse._SubParsersAction) -> None:
    """Every verb's --help ends with its examples (toolkit.cli.help.EXAMPLES), laid out as written."""
    from toolkit.cli.help import epilog

    for verb, sp in sub.choices.items():
        sp.epilog = epilog(verb)
        sp.formatter_class = argparse.RawDescriptionHelpFormatter


def _on_stop_signal(signum: int, frame: object) -> None:
    # SIGTERM takes the same unwinding path as Ctrl-C so rollback steps run; the stop request
    # keeps loops over stages (the nightly's images) from starting another one.
    request_stop()
    raise KeyboardInterrupt


def _die_of_sigpipe() -> NoReturn:
    """The reader of our output went away (``golden --json images | head -1``): end as ``cat`` does,
    killed by SIGPIPE, silently. Not SIG_DFL from the start: ``golden serve`` writes to sockets
    whose clients may vanish, and must not die of that."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(128 + signal.SIGPIPE)  # only if SIGPIPE could not end us


def _complete(parser: argparse.ArgumentParser) -> None:
    """Shell completion through argcomplete, as ansible-core does; a no-op unless the shell asks."""
    if "_ARGCOMPLETE" not in os.environ:
        return  # the import costs time on every run otherwise
    import argcomplete

    argcomplete.autocomplete(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """``golden``: parse, run the verb, map a typed error to its exit code; the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # completion offers every verb, so it needs them all; a plain run imports only its own
    parser = build_parser(only=None if "_ARGCOMPLETE" in os.environ else verb_of(argv))
    _complete(parser)
    args = parser.parse_args(argv)
    debug, verbose = bool(args.debug), int(args.verbose or 0)
    level = logging.DEBUG if debug or verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    setup_logging(level)
    clear_stop()
    signal.signal(signal.SIGTERM, _on_stop_signal)
    signal.signal(signal.SIGINT, _on_stop_signal)
    ctx = Context(json=bool(args.json), debug=debug, project=args.project, home=args.home)
    try:
        # --list-hosts (every host-selecting verb, toolkit.cli.hostopts) lists instead of acting, as in Ansible
        func = cmd_list_hosts if getattr(args, "list_hosts", False) else args.func
        code = int(func(args, ctx) or 0)
        sys.stdout.flush()  # here, where a closed pipe is still ours to handle, not at interpreter exit
        return code
    except BrokenPipeError:
        _die_of_sigpipe()
        raise  # not reached
    except KeyboardInterrupt:
        # Only what is true for this verb: each says what an interrupt leaves behind.
        err: GoldenError = Interrupted(getattr(args, "interrupted", f"golden {args.command}: interrupted"))
        return ctx.fail(err)
    except GoldenError as exc:
        if args.debug:
            logging.getLogger("golden").exception("failed")
        return ctx.fail(exc)


if __name__ == "__main__":
    sys.exit(main())
