"""The argparse types the commands share. A bad value is argparse's usage error (exit 2),
with a message that says what is wrong with it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from scalekit.core.options import parse_duration

T = TypeVar("T")
Number = TypeVar("Number", int, float)


def argument_type(convert: Callable[[str], T], name: str) -> Callable[[str], T]:
    """An argparse type from ``convert(text)``: the message of its ``ValueError`` (a
    :class:`~scalekit.core.errors.ConfigError` is one) becomes the usage error."""

    def parse(text: str) -> T:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name
    return parse


def non_negative(kind: type[Number]) -> Callable[[str], Number]:
    """``kind(text)`` (``int`` or ``float``), 0 or more: seconds, counts."""
    return _checked(kind, lambda value: value >= 0, "is negative")


def positive(kind: type[Number]) -> Callable[[str], Number]:
    """``kind(text)`` (``int`` or ``float``), more than 0: how many to show, a batch size,
    a number of passes."""
    least = "1 or more" if kind is int else "more than 0"
    return _checked(kind, lambda value: value > 0, f"is not positive: give {least}")


def _checked(
    kind: type[Number], acceptable: Callable[[Number], bool], problem: str
) -> Callable[[str], Number]:
    def convert(text: str) -> Number:
        value = kind(text)  # its ValueError: argparse's "invalid int value"
        if not acceptable(value):
            raise argparse.ArgumentTypeError(f"{text} {problem}")
        return value

    convert.__name__ = kind.__name__
    return convert


#: ``45s``, ``90m``, ``12h``, ``30d``, ``2w``, ``1h30m`` or a bare number of seconds, as seconds
#: (0 or more): :func:`scalekit.core.options.parse_duration`.
duration = argument_type(parse_duration, "duration")


def in_range(low: int, high: int) -> Callable[[str], int]:
    """An int from ``low`` to ``high``: a compression level, a number of workers."""

    def convert(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not in {low}..{high}")
        return value

    convert.__name__ = "int"
    return convert
