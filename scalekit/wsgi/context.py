"""``RequestVar``: the object a middleware gives one request, for ``current()`` to find.

A context variable, so each thread or asyncio task serving a request sees its own; the
middleware sets it when the request starts and resets it when the response is closed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Generic, TypeVar

from scalekit.core.errors import MissingContext

__all__ = ["RequestVar"]

T = TypeVar("T")


class RequestVar(Generic[T]):
    """One request's object; :meth:`get` outside a request raises ``MissingContext(missing)``,
    which tells the developer what to wrap the app in. ``set(value)`` makes ``value`` the
    current request's object and returns the token :meth:`reset` takes (the context
    variable's own ``set``: nothing added on the request path)."""

    __slots__ = ("_missing", "_var", "set")

    def __init__(self, name: str, missing: str):
        self._var: contextvars.ContextVar[T | None] = contextvars.ContextVar(name, default=None)
        self._missing = missing
        self.set: Callable[[T | None], contextvars.Token] = self._var.set

    def get(self) -> T:
        """The object of the request this thread (or task) is serving."""
        value = self._var.get()
        if value is None:
            raise MissingContext(self._missing)
        return value

    def reset(self, token: contextvars.Token) -> None:
        """Undo :meth:`set`; from another context (a server closing the response on another
        thread) the token does not apply, so the object is just forgotten there."""
        try:
            self._var.reset(token)
        except ValueError:
            self._var.set(None)
