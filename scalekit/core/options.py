"""One rule for every piece's options: URL query options, converted, then keyword options.

``open_store("redis://h/0?socket_timeout=0.5", socket_timeout=2)`` uses 2: a keyword given in
code overrides the URL. An option nobody knows, in the URL or as a keyword, is a
:class:`~scalekit.core.errors.ConfigError` naming the (masked) URL and the options it takes;
:func:`known_options` gives a middleware's constructor or decorator the same rule.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

from scalekit.core.errors import ConfigError
from scalekit.core.urls import BackendURL

__all__ = ["as_bool", "known_options", "merge_options", "parse_duration", "positive_int_or_none"]

F = TypeVar("F", bound=Callable[..., Any])
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def merge_options(
    settings: BackendURL, spec: dict[str, Callable[[str], Any]], given: dict[str, Any]
) -> dict[str, Any]:
    """URL query options converted by ``spec``, overridden by keyword options ``given``."""
    settings.check_options(spec)
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ConfigError(
            f"{settings.masked}: unknown option {', '.join(unknown)}; "
            f"takes {', '.join(sorted(spec))}"
        )
    merged = {name: settings.option(name, convert=convert) for name, convert in spec.items()
              if name in settings.options}  # fmt: skip
    merged.update(given)
    return merged


def as_bool(text: str) -> bool:
    """Read a URL option as a boolean: 1/true/yes/on or 0/false/no/off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def positive_int_or_none(text: str) -> int | None:
    """Read a URL option that is a positive int, or 0/none meaning "no bound"."""
    if text.strip().lower() in ("0", "none", ""):
        return None
    value = int(text)
    if value < 0:
        raise ValueError("must be a positive number")
    return value


#: Seconds per unit of a duration.
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhdw]?)")


def parse_duration(text: str) -> float:
    """Seconds in a duration: ``45s``, ``90m``, ``12h``, ``30d``, ``2w``, ``1h30m``, or a
    bare number of seconds; 0 or more. :class:`ConfigError` for anything else."""
    spec = text.strip().lower()
    total, end = 0.0, 0
    for part in _PART.finditer(spec):
        bare = not part.group(2)  # a number without a unit: only on its own
        if part.start() != end or (bare and (part.start(), part.end()) != (0, len(spec))):
            break
        total += float(part.group(1)) * DURATION_UNITS[part.group(2) or "s"]
        end = part.end()
    if not spec or end != len(spec):
        raise ConfigError(
            f"{text!r} is not a duration: give a number and a unit, s, m, h, d or w "
            "(e.g. 30d, 1h30m)"
        )
    return total


def known_options(*forwarded_to: Callable[..., Any]) -> Callable[[F], F]:
    """Decorate a constructor or function so that a keyword it does not take (itself, or
    through its ``**options`` to ``forwarded_to``: functions or classes) is a
    :class:`ConfigError` naming it and the ones taken, instead of a ``TypeError``."""

    def decorate(function: F) -> F:
        names = frozenset().union(*map(_keywords, (function, *forwarded_to))) - {"self"}
        owner = function.__qualname__.removesuffix(".__init__")

        @functools.wraps(function)
        def checked(*args: Any, **options: Any) -> Any:
            unknown = options.keys() - names
            if unknown:
                raise ConfigError(
                    f"{owner}: unknown option {', '.join(sorted(unknown))}; "
                    f"takes {', '.join(sorted(names))}"
                )
            return function(*args, **options)

        checked.known_options = names  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return decorate


def _keywords(target: Callable[..., Any]) -> frozenset[str]:
    """The keywords ``target`` (a class: its constructor) takes by name."""
    function = target.__init__ if isinstance(target, type) else target
    known = getattr(function, "known_options", None)
    if known is not None:
        return known
    parameters = inspect.signature(function).parameters.values()
    return frozenset(p.name for p in parameters if p.kind in _NAMED)
