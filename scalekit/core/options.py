"""One rule for every piece's options: URL query options, converted, then keyword options.

``open_store("redis://h/0?socket_timeout=0.5", socket_timeout=2)`` uses 2: a keyword given in
code overrides the URL. An option nobody knows, in the URL or as a keyword, is a
:class:`~scalekit.core.errors.ConfigError` naming the (masked) URL and the options it takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scalekit.core.errors import ConfigError
from scalekit.core.urls import BackendURL

__all__ = ["as_bool", "merge_options", "positive_int_or_none"]


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
