"""WSGI glue: ``DBMiddleware`` for a whole app, ``with_db`` for one view, and the view
markers ``read_only``, ``read_write``, ``autocommit`` and ``manual``.

Per request: a :class:`DBScope` in ``environ["scalekit.db"]`` and :func:`current`; it
commits when the request succeeds and rolls back on an exception or a 5xx response, then
returns the connections to the pool. A list body (the usual case) is committed before the
response leaves, so a client following a redirect finds the write; a streamed body runs
inside the transaction, which commits once the body is complete.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from scalekit.core.errors import DatabaseUnavailable
from scalekit.db.replicas import ReplicaSet
from scalekit.db.routing import SAFE_METHODS, Router
from scalekit.db.scope import ENVIRON_KEY, DBScope, _current
from scalekit.wsgi.headers import make_private

_UNAVAILABLE_BODY = (
    b"Service temporarily unavailable: the database cannot be reached. "
    b"Please try again in a few seconds.\n"
)


class DBMiddleware:
    """Give every request a :class:`DBScope` over ``replicas`` (a :class:`ReplicaSet` or
    the primary's URL) and end its transactions with the request.

    ``define``: called with each new DAL (define the app's tables there). Routing options
    (``read_only_actions``, ``read_only_methods``, ``pin_seconds``, ``pin_cookie``): see
    :class:`~scalekit.db.routing.Router`. A :class:`DatabaseUnavailable` raised by the app
    before it starts its response becomes a 503 with ``Retry-After: retry_after``. Other
    keyword arguments go to every ``pydal.DAL`` of the request.
    """

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
        token = _current.set(scope)
        response = _Response(self, environ, scope, start_response, token)
        try:
            result = self.app(environ, response.start_response)
        except DatabaseUnavailable:
            response.end(success=False)
            if response.sent:
                raise
            start_response(*self._unavailable())
            return [_UNAVAILABLE_BODY]
        except BaseException:
            response.end(success=False)
            raise
        if isinstance(result, (list, tuple)):
            try:
                response.end(success=response.ok)
            except BaseException:
                _close(result)
                raise
            response.flush()
            return result
        return _Body(result, response)

    def _unavailable(self) -> tuple[str, list[tuple[str, str]]]:
        return "503 Service Unavailable", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(_UNAVAILABLE_BODY))),
            ("Retry-After", str(self.retry_after)),
            ("Cache-Control", "no-store"),
        ]


class _Response:
    """The app's ``start_response``, held back until the transaction has ended (or the
    first body chunk is ready), so a failed commit can still become an error response."""

    def __init__(self, middleware, environ, scope, start_response, token):
        self._middleware, self._environ, self._scope = middleware, environ, scope
        self._start_response, self._token = start_response, token
        self._pending: list[Any] = []
        self._write: Callable[[bytes], Any] | None = None
        self.sent = False
        self._ended = False
        self._pin = False

    @property
    def ok(self) -> bool:
        """True unless the app answered with a 5xx status (or has not answered)."""
        return bool(self._pending) and not self._pending[0].startswith("5")

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None and self.sent:
            raise exc_info[1].with_traceback(exc_info[2])
        self._pending = [status, list(headers), exc_info]
        return self.write

    def write(self, data: bytes) -> None:
        """WSGI's legacy ``write``: sends the headers first."""
        self.flush()
        if self._write is not None:
            self._write(data)

    def flush(self) -> None:
        """Pass the held ``start_response`` on (with the pin cookie after a write)."""
        if self.sent or not self._pending:
            return
        status, headers, exc_info = self._pending
        if (self._pin or self._scope.wrote) and self.ok:
            pin = self._middleware.router.pin(self._environ)
            headers = make_private(headers + pin) if pin else headers
        self.sent = True
        self._write = self._start_response(status, headers, exc_info)

    def end(self, success: bool) -> None:
        """End the scope's transactions once (commit on ``success``), forget the scope."""
        if self._ended:
            return
        self._ended, self._pin = True, self._scope.wrote and success
        try:
            self._scope.finish(success)
        finally:
            try:
                _current.reset(self._token)
            except ValueError:  # ended from another context: just forget the scope
                _current.set(None)


class _Body:
    """A streamed body: headers go out with the first chunk, the transaction ends when the
    body is complete (committed) or closed early or broken (rolled back)."""

    def __init__(self, result: Iterable[bytes], response: _Response):
        self._result, self._response = result, response

    def __iter__(self):
        response = self._response
        for chunk in self._result:
            response.flush()
            yield chunk
        response.end(success=response.ok)
        response.flush()

    def close(self) -> None:
        try:
            _close(self._result)
        finally:
            self._response.end(success=False)


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def with_db(replicas: ReplicaSet | str, **options: Any) -> Callable[[Callable], Callable]:
    """Decorate one WSGI view so it gets a :class:`DBScope`, as ``DBMiddleware`` does."""

    def decorate(view: Callable) -> Callable:
        return functools.update_wrapper(DBMiddleware(view, replicas, **options), view)

    return decorate


def _marked(view: Callable, apply: Callable[[DBScope], None]) -> Callable:
    """``view`` that applies ``apply`` to the request's scope before it runs."""

    @functools.wraps(view)
    def marked(environ: dict, start_response: Callable):
        scope = environ.get(ENVIRON_KEY)
        if scope is None:
            raise LookupError(f"{view.__name__}: no database scope; wrap the app in DBMiddleware")
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
