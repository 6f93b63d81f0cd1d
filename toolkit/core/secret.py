"""Secrets that refuse to be printed."""

from __future__ import annotations


class Secret:
    """A string that shows as *** in repr, str, f-strings, logs and tracebacks.

    Call reveal() at the single point where the value must be handed to a library.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself: only where it must go (a BMC session, a file with mode 0600)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # never pickle the clear text by accident
        raise TypeError("Secret values cannot be pickled")
