"""``per_view``: a middleware's form for one view, so every piece's decorator reads alike
(``@with_session(...)``, ``@with_db(...)``, ``@with_tickets(...)``, ``@with_maintenance(...)``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["per_view"]


def per_view(middleware: Callable[..., Callable], *args: Any, **options: Any) -> Callable:
    """A decorator that wraps one WSGI view in ``middleware(view, *args, **options)``,
    keeping the view's name and docstring."""

    def decorate(view: Callable) -> Callable:
        return functools.update_wrapper(middleware(view, *args, **options), view)

    return decorate
