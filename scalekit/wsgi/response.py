"""The response side of a middleware: the app's body closed with a cleanup after it, a
``start_response`` held back until the middleware lets it go, and a whole response collected.

PEP 3333 has the server call ``close()`` on the body once the response is sent or abandoned,
also when it failed: that is where a middleware ends what it began for the request (a
session's lock, a transaction). A middleware that must still be able to change the answer
after the app has started it (a failed commit becomes an error page) holds the app's
``start_response`` until the last moment: the body's first chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["ClosingBody", "HeldResponse", "chain_close", "close_body", "collect_response"]

Headers = list[tuple[str, str]]


def close_body(body: Iterable[bytes]) -> None:
    """Close an app's body if it has a ``close`` (PEP 3333)."""
    close = getattr(body, "close", None)
    if close is not None:
        close()


def chain_close(body: object, cleanup: Callable[[], None]) -> Callable[[], None] | None:
    """Make ``body.close()`` run ``cleanup`` after it (also when closing raised), on the
    object itself: the server's ``wsgi.file_wrapper`` must come back as the very object it
    made, to be sent with ``sendfile``. Returns what puts the old ``close`` back, or None
    when the object takes no attribute (wrap it in a :class:`ClosingBody` instead)."""
    closing = getattr(body, "close", None)

    def close() -> None:
        try:
            if closing is not None:
                closing()
        finally:
            cleanup()

    try:
        body.close = close  # type: ignore[attr-defined]
    except AttributeError:
        return None

    def restore() -> None:
        body.close = closing if closing is not None else (lambda: None)  # type: ignore[attr-defined]

    return restore


class ClosingBody:
    """An app's body, passed on chunk by chunk; ``close()`` closes it, then runs
    ``on_close`` (also when closing the body raised). Subclasses change the iteration."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None] | None = None):
        self.body, self.on_close = body, on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        if self.on_close is None:
            close_body(self.body)
            return
        try:
            close_body(self.body)
        finally:
            self.on_close()


class HeldResponse:
    """The ``start_response`` given to the app: it records the app's status and headers, and
    :meth:`send` passes them on. WSGI's ``write()`` sends first. Subclasses add headers at
    the last moment by overriding :meth:`final_headers`."""

    def __init__(self, start_response: Callable):
        self._start_response = start_response
        self._write: Callable[[bytes], Any] | None = None
        self.status: str | None = None
        self.headers: Headers = []
        self.exc_info: Any = None
        self.sent = False

    @property
    def ok(self) -> bool:
        """True once the app answered, with anything but a 5xx status."""
        return self.status is not None and not self.status.startswith("5")

    def __call__(self, status: str, headers: Headers, exc_info: Any = None) -> Callable:
        if exc_info is not None and self.sent:  # too late to replace: re-raise (PEP 3333)
            raise exc_info[1].with_traceback(exc_info[2])
        self.status, self.headers, self.exc_info = status, list(headers), exc_info
        return self.write

    def write(self, data: bytes) -> None:
        """WSGI's legacy ``write``: sends the held response first."""
        self.send()
        if self._write is not None:
            self._write(data)

    def send(self) -> None:
        """Pass the app's response on, once, if it has started one."""
        if self.sent or self.status is None:
            return
        self.sent = True
        self._write = self._start_response(self.status, self.final_headers(), self.exc_info)

    def final_headers(self) -> Headers:
        """The headers to send: the app's."""
        return self.headers


def collect_response(app: Callable, environ: dict) -> tuple[str, Headers, bytes]:
    """Call ``app`` and collect its whole response: status, headers and body (``write()``
    calls included; a response the app replaced with ``exc_info`` drops what it wrote)."""
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: Headers, exc_info: Any = None) -> Callable:
        if exc_info is not None and started:
            chunks.clear()
        started[:] = [status, list(headers)]
        return chunks.append

    body = app(environ, start_response)
    try:
        chunks.extend(body)
    finally:
        close_body(body)
    if not started:
        raise RuntimeError(f"{app!r} returned without calling start_response")
    return started[0], started[1], b"".join(chunks)
