"""WSGI glue: ``DBMiddleware`` for a whole app, ``with_db`` for one view, and the view
markers ``read_only``, ``read_write``, ``autocommit`` and ``manual``.

Per request: a :class:`DBScope` in ``environ["scalekit.db"]``, :func:`current` and
:data:`scalekit.core.context.transaction` (what the other pieces see of it); it
commits when the request succeeds and rolls back on an exception or a 5xx response, then
returns the connections to the pool. A list body (the usual case) is committed before the
response leaves, so a client following a redirect finds the write; a streamed body runs
inside the transaction, which commits once the body is complete. The app's
``start_response`` is held (:class:`~scalekit.wsgi.response.HeldResponse`) until then, so a
failed commit can still become an error response.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydal import DAL

from scalekit.core.context import transaction
from scalekit.core.errors import DatabaseUnavailable, MissingContext
from scalekit.core.options import known_options
from scalekit.db.replicas import ReplicaSet
from scalekit.db.routing import SAFE_METHODS, Router
from scalekit.db.scope import ENVIRON_KEY, DBScope, current_scope
from scalekit.wsgi.headers import make_private
from scalekit.wsgi.pages import unavailable
from scalekit.wsgi.response import ClosingBody, HeldResponse, close_body
from scalekit.wsgi.views import per_view


class DBMiddleware:
    """Give every request a :class:`DBScope` over ``replicas`` (a :class:`ReplicaSet` or
    the primary's URL) and end its transactions with the request.

    ``define``: called with each new DAL (define the app's tables there). Routing options
    (``read_only_actions``, ``read_only_methods``, ``pin_seconds``, ``pin_cookie``): see
    :class:`~scalekit.db.routing.Router`; without replicas nothing is pinned (no cookie, no
    session key). A :class:`DatabaseUnavailable` raised by the app
    before it starts its response becomes a 503 with ``Retry-After: retry_after``. Other
    keyword arguments go to every ``pydal.DAL`` of the request.
    """

    @known_options(DAL)
    def __init__(
        self,
        app: Callable,
        replicas: ReplicaSet | str,
        *,
        define: Callable[[Any], Any] | None = None,
        read_only_actions: Iterable[str] = (),
        read_only_methods: Iterable[str] = SAFE_METHODS,
        pin_seconds: float = 10.0,
        pin_cookie: str = "scalekit_db_pin",
        retry_after: int = 5,
        **dal_options: Any,
    ):
        self.app = app
        self.replicas = replicas if isinstance(replicas, ReplicaSet) else ReplicaSet(replicas)
        self.router = Router(read_only_actions, read_only_methods, pin_seconds, pin_cookie)
        if not self.replicas.replicas:  # every read is the primary's: nothing to pin to
            self.router.pin_seconds = 0
        self.define, self.retry_after, self.dal_options = define, retry_after, dal_options

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        router = self.router
        scope = DBScope(
            self.replicas,
            router.read_only(environ),
            pinned=lambda: router.pinned(environ),
            define=self.define,
            dal_options=self.dal_options,
        )
        environ[ENVIRON_KEY] = scope
        tokens = current_scope.set(scope), transaction.set(scope)
        response = _Response(start_response, router, environ, scope, tokens)
        try:
            result = self.app(environ, response)
        except DatabaseUnavailable:
            response.end(success=False)
            if response.sent:
                raise
            return unavailable("the database", self.retry_after).send(start_response)
        except BaseException:
            response.end(success=False)
            raise
        if isinstance(result, (list, tuple)):
            try:
                response.end(success=response.ok)
            except BaseException:
                close_body(result)
                raise
            response.send()
            return result
        return _Body(result, response)


class _Response(HeldResponse):
    """The app's ``start_response``, held back until the transaction has ended (or the
    first body chunk is ready), so a failed commit can still become an error response;
    a response to a request that wrote pins the client to the primary."""

    def __init__(self, start_response, router, environ, scope, tokens):
        super().__init__(start_response)
        self._router, self._environ, self._scope, self._tokens = router, environ, scope, tokens
        self._ended = False
        self._pin = False

    def final_headers(self) -> list[tuple[str, str]]:
        """The app's headers, with the pin cookie after a write."""
        if (self._pin or self._scope.wrote) and self.ok:
            pin = self._router.pin(self._environ)
            if pin:
                return make_private(self.headers + pin)
        return self.headers

    def end(self, success: bool) -> None:
        """End the scope's transactions once (commit on ``success``, then its on_commit
        callbacks), forget the scope."""
        if self._ended:
            return
        self._ended, self._pin = True, self._scope.wrote and success
        try:
            self._scope.finish(success)
        finally:
            current_scope.reset(self._tokens[0])
            transaction.reset(self._tokens[1])


class _Body(ClosingBody):
    """A streamed body: headers go out with the first chunk, the transaction ends when the
    body is complete (committed) or closed early or broken (rolled back)."""

    def __init__(self, body: Iterable[bytes], response: _Response):
        super().__init__(body, functools.partial(response.end, success=False))
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        for chunk in self.body:
            response.send()
            yield chunk
        response.end(success=response.ok)
        response.send()


@known_options(DBMiddleware)
def with_db(replicas: ReplicaSet | str, **options: Any) -> Callable[[Callable], Callable]:
    """Decorate one WSGI view so it gets a :class:`DBScope`, as ``DBMiddleware`` does."""
    return per_view(DBMiddleware, replicas, **options)


def _marked(view: Callable, apply: Callable[[DBScope], None]) -> Callable:
    """``view`` that applies ``apply`` to the request's scope before it runs."""

    @functools.wraps(view)
    def marked(environ: dict, start_response: Callable):
        scope = environ.get(ENVIRON_KEY)
        if scope is None:
            raise MissingContext(
                f"{view.__name__}: no database scope; wrap the app in DBMiddleware"
            )
        apply(scope)
        return view(environ, start_response)

    return marked


def read_only(view: Callable) -> Callable:
    """Mark a WSGI view read-only: ``scope.db`` is a replica, whatever the method."""
    return _marked(view, lambda scope: setattr(scope, "read_only", True))


def read_write(view: Callable) -> Callable:
    """Mark a WSGI view as writing: ``scope.db`` is the primary, even for a GET."""
    return _marked(view, lambda scope: setattr(scope, "read_only", False))


def autocommit(view: Callable) -> Callable:
    """Opt a WSGI view out of the request transaction: every statement commits at once."""
    return _marked(view, DBScope.autocommit)


def manual(view: Callable) -> Callable:
    """Let a WSGI view commit itself; what it leaves uncommitted is rolled back."""
    return _marked(view, DBScope.manual)
