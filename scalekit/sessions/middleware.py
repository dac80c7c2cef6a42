"""WSGI glue: ``SessionMiddleware`` for a whole app, ``with_session`` for one view, on the
plumbing of :mod:`scalekit.wsgi` (closing body, 503 page, ``make_private``, environ key,
``current()``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from scalekit.core.errors import ConflictError
from scalekit.core.options import known_options
from scalekit.sessions.engine import SessionEngine, StoreFailure
from scalekit.sessions.session import Session
from scalekit.sessions.stores import SessionStore
from scalekit.wsgi.context import RequestVar
from scalekit.wsgi.environ import SESSION_KEY as ENVIRON_KEY
from scalekit.wsgi.headers import make_private, vary_on_cookie
from scalekit.wsgi.pages import NO_STORE, TEXT, Page, page, unavailable
from scalekit.wsgi.response import ClosingBody, close_body
from scalekit.wsgi.views import per_view

__all__ = [
    "ENVIRON_KEY",
    "SessionMiddleware",
    "current",
    "failure_page",
    "session_headers",
    "with_session",
]

_CONFLICT = page(
    "409 Conflict",
    TEXT,
    b"Conflict: this request's changes to your session were not saved, because other "
    b"requests of yours changed it at the same time. Please try again.\n",
    NO_STORE,
)

_sessions: RequestVar[Session] = RequestVar(
    "scalekit_session", "no session here: run inside SessionMiddleware or @with_session"
)


def current() -> Session:
    """The session of the request this thread (or task) is serving."""
    return _sessions.get()


def failure_page(engine: SessionEngine, exc: Exception, *, saving: bool = False) -> Page:
    """The answer to a store failure: 409 for a save that concurrent writers kept beating,
    else 503 with Retry-After."""
    if saving and isinstance(exc, ConflictError):
        return _CONFLICT
    return unavailable("the session store", engine.retry_after)


def session_headers(
    headers: list[tuple[str, str]], cookies: list[tuple[str, str]], read: bool
) -> list[tuple[str, str]]:
    """A response's headers once its session is saved: with the session's ``cookies`` and
    ``Cache-Control: private``; varying on ``Cookie`` if the session was ``read``."""
    if cookies:
        return make_private([*headers, *cookies])
    return vary_on_cookie(headers) if read else headers


class SessionMiddleware:
    """Give every request a lazy session: ``environ["scalekit.session"]`` and ``current()``.

    The session is saved when the application calls ``start_response`` (so the cookie can
    be set), and its lock, if any, is released when the response is closed, also on errors.
    A response that read the session varies on ``Cookie``; one that set the cookie is also
    ``Cache-Control: private``.
    A store failure under ``on_store_error="fail_closed"`` becomes a 503 with Retry-After.
    A change that could not be saved is never answered as saved, under either policy: a
    503 if the store failed, a 409 if concurrent writers kept winning.
    """

    @known_options(SessionEngine)
    def __init__(
        self,
        app: Callable,
        store: SessionStore | str,
        secret: str | bytes | Sequence[str | bytes],
        **options: Any,
    ):
        self.app = app
        self.engine = SessionEngine(store, secret, **options)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        engine = self.engine
        session = engine.begin(environ)
        environ[ENVIRON_KEY] = session
        token = _sessions.set(session)
        failed: list[Page] = []  # the 503 page, once a save failed
        saved: list[list[tuple[str, str]]] = []  # the cookie headers, once saved

        def session_start_response(status, headers, exc_info=None):
            if failed:  # an error page replacing ours after a failed save
                return start_response(status, headers, exc_info)
            if not saved:  # save once, even if the app starts its response again
                try:
                    saved.append(engine.finish(session))
                except StoreFailure as exc:  # the change was not saved: never a 200
                    failed.append(failure_page(engine, exc, saving=True))
                    return start_response(failed[0].status, failed[0].headers, exc_info)
            # read: the page may depend on who is asking
            headers = session_headers(headers, saved[0], session._data is not None)
            return start_response(status, headers, exc_info)

        def done():
            engine.release(session)
            _sessions.reset(token)

        try:
            result = self.app(environ, session_start_response)
        except StoreFailure as exc:
            done()
            if session._failure is not exc:
                raise
            return failure_page(engine, exc).send(start_response)
        except BaseException:
            done()
            raise
        if failed:
            close_body(result)
            done()
            return [failed[0].body]
        if type(result) is list and saved:  # a finished body: nothing left to run or close
            done()
            return result
        return _Body(result, done, failed)


@known_options(SessionMiddleware)
def with_session(
    store: SessionStore | str, secret: str | bytes | Sequence[str | bytes], **options: Any
) -> Callable[[Callable], Callable]:
    """Decorate one WSGI view so it gets a session, as ``SessionMiddleware`` does."""
    return per_view(SessionMiddleware, store, secret, **options)


class _Body(ClosingBody):
    """The application's body, with ``done`` run when the server closes it. If the session
    could not be saved when the application called ``start_response`` late (from its body
    iterator), the body becomes the 503 page."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None], failed: list[Page]):
        super().__init__(body, done)
        self._failed = failed

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            if self._failed:
                yield self._failed[0].body
                return
            yield chunk
