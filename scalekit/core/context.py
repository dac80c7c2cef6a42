"""The context variables of one request that the floors and the pieces share.

A piece sets them for the request it serves and resets them when the response is closed;
another piece reads them without importing the first (pieces never import each other):

- :data:`request_id`: the request's id (``X-Request-ID``), set by ``scalekit.frontend``'s
  ``FrontendMiddleware``, else by ``TicketMiddleware``; ``None`` outside a request.
  ``scalekit.tasks`` stamps it on the tasks a request defers. Both middlewares keep an
  incoming id that :func:`well_formed_request_id` accepts, else make one with
  :func:`new_request_id`, so they agree on the same request's id.
- :data:`transaction`: the request's database transaction (a :class:`Transaction`), set by
  ``scalekit.db``'s ``DBMiddleware`` and ``@with_db``; ``scalekit.tasks`` writes a
  transactional task through it.
- :data:`deadline`: the request's time limit (a :class:`Limit`), set by
  ``scalekit.frontend``'s ``Deadline``; :func:`remaining` tells how much of it is left, and
  scalekit's own Redis and PostgreSQL calls wait no longer than that.

Each is a context variable, so each thread or asyncio task serving a request sees its own.
"""

from __future__ import annotations

import contextvars
import math
import os
import re
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from scalekit.core.errors import MissingContext

__all__ = [
    "Limit",
    "RequestVar",
    "Transaction",
    "deadline",
    "new_request_id",
    "remaining",
    "request_id",
    "reset",
    "transaction",
    "well_formed_request_id",
]

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
        """Undo :meth:`set` (see :func:`reset`: from another context, just forget it)."""
        reset(self._var, token)


def reset(var: contextvars.ContextVar, token: contextvars.Token) -> None:
    """Undo ``var.set()``; from another context (a server closing the response on another
    thread) the token does not apply, so the value is just forgotten there."""
    try:
        var.reset(token)
    except ValueError:
        var.set(None)


class Transaction(Protocol):
    """The current request's database transaction, as the pieces that are not
    ``scalekit.db`` see it."""

    @property
    def writer(self) -> Any:
        """The primary's pydal DAL, inside the request's transaction (opened on first use)."""

    def on_commit(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` once the transaction has committed (dropped if it rolls back);
        a failing callback is logged, never raised into the request."""


#: The request's id, or None outside a request (a plain context variable: no one needs
#: to be told where to get one).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "scalekit_request_id", default=None
)
#: Whether an incoming request id is worth keeping: 1-128 characters of ``A-Z a-z 0-9 . _ :
#: @ -`` (nginx's ``$request_id``, haproxy's ``unique-id``, a UUID); ``None`` if not.
well_formed_request_id: Callable[[str], Any] = re.compile(r"[A-Za-z0-9._:@-]{1,128}").fullmatch


def new_request_id() -> str:
    """A new request id: 128 random bits as 32 hex digits."""
    return os.urandom(16).hex()


#: The request's database transaction; ``get()`` outside one raises MissingContext.
transaction: RequestVar[Transaction] = RequestVar(
    "scalekit_transaction",
    "no database transaction here: run inside scalekit.db's DBMiddleware or @with_db",
)


class Limit:
    """When the current request's time runs out: ``at``, in :func:`time.monotonic` seconds.

    An object rather than the bare number, because the thread that enforces the limit
    moves ``at`` on (to the end of the grace) when it interrupts the request, and a thread
    cannot set another thread's context variable."""

    __slots__ = ("at",)

    def __init__(self, at: float):
        self.at = at


#: The request's time limit, or None outside a request that has one.
deadline: contextvars.ContextVar[Limit | None] = contextvars.ContextVar(
    "scalekit_deadline", default=None
)


def remaining() -> float:
    """Seconds left before the current request's deadline (0.0 once it has passed;
    ``math.inf`` outside a request with a deadline). After ``DeadlineExceeded`` was raised
    in the request: the seconds left of its grace."""
    limit = deadline.get()
    if limit is None:
        return math.inf
    return max(limit.at - time.monotonic(), 0.0)
