"""Typed errors. The library raises these; only the CLI decides how to show them.

Exit status follows osbuild: 2 for bad input, 1 for an operation that failed, 130 on Ctrl-C.
Messages are single sentences that say what to fix; they never contain secrets.
"""

from __future__ import annotations


class GoldenError(Exception):
    """Base of every error a user may see."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(GoldenError):
    """The user gave us something we cannot use (a spec, a flag, an inventory)."""

    exit_code = 2


class SpecError(InputError):
    """One or more image specs or roles are invalid; carries every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) found:\n" + "\n".join(f"  {p}" for p in problems))


class GateError(GoldenError):
    """A gate refused the operation (unchecked build, missing soak, ...); the message names the gate."""


class ToolMissingError(GoldenError):
    """An external program we need is not installed."""


class CommandError(GoldenError):
    """An external command returned non-zero."""

    def __init__(self, message: str, *, returncode: int, log_tail: str = "", hint: str | None = None):
        super().__init__(message, hint)
        self.returncode = returncode
        self.log_tail = log_tail


class BakeError(GoldenError):
    """A bake failed; the message names the failing step."""


class StoreError(GoldenError):
    """The image store is inconsistent, locked, or missing an entry."""


class LockedError(StoreError):
    """Another golden command holds the lock we need."""


class Interrupted(GoldenError):
    """Ctrl-C or SIGTERM stopped an operation (exit 130)."""
    exit_code = 130
