"""argparse ``type=`` factories with ranges, so nonsense numbers stop at parsing, with exit status 2.

A bad value becomes ``golden reimage: error: argument --wave-size: must be at least 1 (or 1%..100%)``
before any verb runs; every numeric option of every verb uses one of these.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from toolkit.core.duration import SHAPE, parse_duration
from toolkit.core.errors import InputError
from toolkit.rollout.plan import Amount

# Longer than any bound below; stops a 5,000-digit value before int() (which has its own limit).
_MAX_CHARS = 24


def _show(text: str) -> str:
    return repr(text if len(text) <= _MAX_CHARS else text[:_MAX_CHARS] + "...")


def _bounded(value: float, lo: float, hi: float | None) -> None:
    if value < lo:
        raise argparse.ArgumentTypeError(f"must be at least {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise argparse.ArgumentTypeError(f"must be at most {hi:g}, got {value:g}")


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """A whole number in ``lo..hi``."""

    def parse(text: str) -> int:
        try:
            if len(text) > _MAX_CHARS:
                raise ValueError
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {_show(text)}") from None
        _bounded(value, lo, hi)
        return value

    parse.__name__ = "int"
    return parse


def finite_float(lo: float, hi: float | None = None) -> Callable[[str], float]:
    """A finite number in ``lo..hi`` (``nan`` and ``inf`` are refused: they defeat every comparison)."""

    def parse(text: str) -> float:
        try:
            if len(text) > _MAX_CHARS:
                raise ValueError
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {_show(text)}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {_show(text)}")
        _bounded(value, lo, hi)
        return value

    parse.__name__ = "float"
    return parse


rate01 = finite_float(0.0, 1.0)
"""A share between 0 and 1 (0.05 is 5%)."""


def amount(lo: int, hi: int = 1_000_000) -> Callable[[str], Amount]:
    """``N`` (``lo..hi``) or ``P%`` (``lo%..100%``), parsed by the rollout planner's own Amount."""

    def parse(text: str) -> Amount:
        try:
            if len(text) > _MAX_CHARS:
                raise InputError(f": expected a whole number or a percentage like 10%, got {_show(text)}")
            value = Amount.parse(text, "")
        except InputError as exc:
            raise argparse.ArgumentTypeError(exc.message.removeprefix(": ")) from None
        if value.value < lo or (not value.percent and value.value > hi):
            raise argparse.ArgumentTypeError(f"must be at least {lo} (or {lo}%..100%)" if value.value < lo
                                             else f"must be at most {hi} (or a percentage)")
        return value

    parse.__name__ = "amount"
    return parse


def refuse_without(args: argparse.Namespace, partner: str, *dests: str) -> None:
    """Options that mean something only with ``partner``: one given without it is an InputError (exit 2),
    never silently ignored. The options must default to None so "given" can be told apart."""
    if getattr(args, partner):
        return
    for dest in dests:
        if getattr(args, dest) is not None:
            raise InputError(f"--{dest.replace('_', '-')} needs --{partner.replace('_', '-')}",
                             hint=f"add --{partner.replace('_', '-')}, or leave --{dest.replace('_', '-')} out")


def duration(lo: float, hi: float) -> Callable[[str], float]:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h``, ``1d`` (toolkit.core.duration: a bare number is seconds),
    within ``lo..hi`` seconds; every option that takes a time span uses this one."""

    def parse(text: str) -> float:
        try:
            if len(text) > _MAX_CHARS:
                raise InputError(f"must be {SHAPE}, got {_show(text)}")
            return parse_duration(text, "", lo=lo, hi=hi)
        except InputError as exc:
            raise argparse.ArgumentTypeError(exc.message.strip()) from None

    parse.__name__ = "duration"
    return parse
