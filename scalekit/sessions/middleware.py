"""WSGI glue: ``SessionMiddleware`` for a whole app, ``with_session`` for one view."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from scalekit.sessions.engine import SessionEngine, StoreFailure
from scalekit.sessions.session import Session
from scalekit.sessions.stores import SessionStore
from scalekit.wsgi.headers import make_private

ENVIRON_KEY = "scalekit.session"
_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "scalekit_session", default=None
)


def current() -> Session:
    """The session of the request this thread (or task) is serving."""
    session = _current.get()
    if session is None:
        raise LookupError("no session here: run inside SessionMiddleware or @with_session")
    return session


class SessionMiddleware:
    """Give every request a lazy session: ``environ["scalekit.session"]`` and ``current()``.

    The session is saved when the application calls ``start_response`` (so the cookie can
    be set), and its lock, if any, is released when the response is closed, also on errors.
    A store failure under ``on_store_error="fail_closed"`` becomes a 503 with Retry-After.
    """

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
        token = _current.set(session)
        failed: list[BaseException] = []
        saved: list[list[tuple[str, str]]] = []  # the cookie headers, once saved

        def session_start_response(status, headers, exc_info=None):
            if failed:  # an error page replacing ours after a failed save
                return start_response(status, headers, exc_info)
            if not saved:  # save once, even if the app starts its response again
                try:
                    saved.append(engine.finish(session))
                except StoreFailure as exc:
                    failed.append(exc)
                    return start_response(*self._unavailable(), exc_info)
            if saved[0]:
                headers = make_private([*headers, *saved[0]])
            return start_response(status, headers, exc_info)

        def done():
            engine.release(session)
            _reset(token)

        try:
            result = self.app(environ, session_start_response)
        except StoreFailure as exc:
            done()
            if session._failure is not exc:
                raise
            start_response(*self._unavailable())
            return [self._unavailable_body]
        except BaseException:
            done()
            raise
        if failed:
            _close(result)
            done()
            return [self._unavailable_body]
        if type(result) is list and saved:  # a finished body: nothing left to run or close
            done()
            return result
        return _Response(result, done, failed, self._unavailable_body)

    _unavailable_body = (
        b"Service temporarily unavailable: the session store cannot be reached. "
        b"Please try again in a few seconds.\n"
    )

    def _unavailable(self) -> tuple[str, list[tuple[str, str]]]:
        return "503 Service Unavailable", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(self._unavailable_body))),
            ("Retry-After", str(self.engine.retry_after)),
            ("Cache-Control", "no-store"),
        ]


def with_session(
    store: SessionStore | str, secret: str | bytes | Sequence[str | bytes], **options: Any
) -> Callable[[Callable], Callable]:
    """Decorate one WSGI view so it gets a session, as ``SessionMiddleware`` does."""

    def decorate(view: Callable) -> Callable:
        return functools.update_wrapper(SessionMiddleware(view, store, secret, **options), view)

    return decorate


class _Response:
    """The application's response, with ``done`` run when the server closes it.

    If the session could not be saved when the application called ``start_response``
    late (from its body iterator), the body becomes the 503 page.
    """

    def __init__(self, result: Iterable[bytes], done: Callable[[], None],
                 failed: list[BaseException], unavailable_body: bytes):  # fmt: skip
        self._result, self._done = result, done
        self._failed, self._unavailable_body = failed, unavailable_body

    def __iter__(self):
        for chunk in self._result:
            if self._failed:
                yield self._unavailable_body
                return
            yield chunk

    def close(self) -> None:
        try:
            _close(self._result)
        finally:
            self._done()


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _reset(token: contextvars.Token) -> None:
    try:
        _current.reset(token)
    except ValueError:  # closed from another context: just forget the session
        _current.set(None)
