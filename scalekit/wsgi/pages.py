"""Pages a middleware answers with itself instead of the app: a 503 while a backend is down,
the 500 page of a failure, an error or maintenance page in HTML or JSON as the client's
``Accept`` prefers.

A page says what failed in general terms and when to retry; an exception's traceback or
details never reach the client (they go to the log, or into a ticket).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scalekit.core.errors import ConfigError
from scalekit.wsgi.http import prefers_json

__all__ = [
    "HTML",
    "JSON",
    "NO_STORE",
    "TEXT",
    "Page",
    "fill",
    "internal_error",
    "negotiated",
    "page",
    "read_template",
    "unavailable",
]

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
JSON = "application/json"
NO_STORE = ("Cache-Control", "no-store")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class Page:
    """A whole response: status, headers (Content-Type and Content-Length first), body."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes

    def send(self, start_response: Callable, exc_info: Any = None) -> list[bytes]:
        """Start the response with ``start_response``; the body to return."""
        if exc_info is None:
            start_response(self.status, list(self.headers))
        else:
            start_response(self.status, list(self.headers), exc_info)
        return [self.body]


def page(status: str, content_type: str, body: bytes, *headers: tuple[str, str]) -> Page:
    """A :class:`Page` of ``body``, with ``headers`` after its type and length."""
    framing = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    return Page(status, [*framing, *headers], body)


def unavailable(what: str, retry_after: int) -> Page:
    """The 503 a middleware answers when ``what`` ("the database") cannot be reached."""
    body = (
        f"Service temporarily unavailable: {what} cannot be reached. "
        "Please try again in a few seconds.\n"
    ).encode()
    return page("503 Service Unavailable", TEXT, body, ("Retry-After", str(retry_after)), NO_STORE)


#: The error pages by status: the JSON ``error``, the HTML title and what the page says.
_ERRORS = {
    "500": ("internal server error", "Internal error", "Something went wrong on our side."),
    "503": ("service unavailable", "Service unavailable",
            "The server took too long to answer this request. Please try again in a moment."),
}  # fmt: skip


def internal_error(accept: str, ticket: str | None, request_id: str | None, status: str = "500"
                   ) -> tuple[str, bytes]:  # fmt: skip
    """The error page's content type and bytes (HTML, or JSON when ``accept`` prefers it)
    for ``status`` (``"500"``; ``"503"``: a request past its deadline): the ticket id (None:
    the error was only logged) and the request id, nothing of the error. One page for every
    layer that answers a failure (tickets, the front end, its deadline)."""
    error, title, said = _ERRORS[status]
    document = {"error": error, "ticket": ticket, "request_id": request_id}
    return negotiated(accept, document, lambda: _error_html(title, said, ticket, request_id))


def _error_html(title: str, said: str, ticket: str | None, request_id: str | None) -> str:
    recorded = (
        f"<p>The error was recorded as ticket <code>{html.escape(ticket)}</code>.</p>"
        if ticket
        else "<p>The error was logged.</p>"
    )
    request = f"<p>Request <code>{html.escape(request_id)}</code></p>" if request_id else ""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
        f"</head><body><h1>{title}</h1><p>{said}</p>"
        f"{recorded}{request}</body></html>"
    )


def negotiated(accept: str, document: dict[str, Any], html: Callable[[], str]) -> tuple[str, bytes]:
    """Content type and body for a client sending ``accept``: ``document`` as JSON if it
    ranks JSON above HTML, else the page ``html()`` makes."""
    if prefers_json(accept):
        return JSON, json.dumps(document).encode()
    return HTML, html().encode()


def read_template(path: str, what: str) -> str:
    """The text of the HTML page ``path`` an app gives a middleware (read once, when the
    middleware is made); :class:`ConfigError` naming ``what`` if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc}") from None


def fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{{name}}`` of ``values`` replaced by its value, HTML-escaped
    (other ``{{...}}`` left as they are)."""
    return _PLACEHOLDER.sub(lambda found: html.escape(values.get(found[1], found[0])), template)
