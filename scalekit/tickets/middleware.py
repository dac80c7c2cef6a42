"""WSGI glue: ``TicketMiddleware`` for a whole app, ``with_tickets`` for one view.

An unhandled exception becomes a ticket in the store and a 500 page (HTML, or JSON when the
client asks for it) that shows the ticket id and nothing else. Writing the ticket is
best-effort: if the store fails, that failure and the original error are both logged.
A failure identical to one of the last ``repeat_window`` seconds in this process (same
exception type and location) is counted on that ticket (its ``count``) instead of being
written as a new one. Each ticket names the request's id, the server (``node``), the app's
``version`` and the client's real address (``X-Forwarded-For`` believed from
``trusted_proxies`` only). Behind :mod:`scalekit.frontend` the request id, node and version
are the front end's (the ones its access log and ``X-Request-ID`` show), and the front end
writes its own tickets (response too large, deadline passed) through the middleware's
:meth:`~TicketMiddleware.capture`, which it finds in ``environ[TICKET_CAPTURE_KEY]``.
``error_page`` replaces the HTML page, as web2py's ``routes_onerror`` does: an HTML file
with ``{{ticket}}`` and ``{{request_id}}`` in it, or a callable
``(ticket_id, request_id) -> str``; if it fails, the built-in page is sent.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import Token
from typing import Any

from scalekit.core import context
from scalekit.core.instance import app_version, node_name
from scalekit.core.options import known_options
from scalekit.core.scrub import scrub_text
from scalekit.tickets.stores import DEFAULT_URL, TicketStore, open_store
from scalekit.tickets.ticket import build, repeated, request_id, signature, versions
from scalekit.wsgi.environ import NODE_KEY, REQUEST_ID_KEY, TICKET_CAPTURE_KEY, VERSION_KEY
from scalekit.wsgi.environ import TICKET_KEY as ENVIRON_KEY
from scalekit.wsgi.http import prefers_json, request_line
from scalekit.wsgi.pages import HTML, NO_STORE, fill, page, read_template
from scalekit.wsgi.pages import internal_error as error_body  # its public name here
from scalekit.wsgi.proxies import client_address, networks
from scalekit.wsgi.response import ClosingBody
from scalekit.wsgi.views import per_view

__all__ = ["ENVIRON_KEY", "TicketMiddleware", "error_body", "with_tickets"]

log = logging.getLogger("scalekit.tickets")

REPEAT_WINDOW = 60.0
_REMEMBERED = 32  # failure signatures a middleware keeps counting at most

#: A custom error page: the ticket id (None if no ticket could be written) and the request
#: id in, the HTML out.
ErrorPage = Callable[[str | None, str], str]


class TicketMiddleware:
    """Catch what ``app`` raises (also while its body is iterated) and write a ticket.

    ``store`` is a :class:`TicketStore` or its URL (default ``file://errors``). If the
    response already started when the error came, the ticket is written, the error logged,
    and the response ends where it was. ``repeat_window`` (seconds, 0 for none): an
    identical failure within it of the ticket's first is counted on that ticket.
    ``error_page``: the path of an HTML file (read now; ``{{ticket}}`` and ``{{request_id}}``
    filled in) or an :data:`ErrorPage` callable, shown instead of the built-in page to
    clients that do not ask for JSON. ``node`` and ``version``: this server's name and the
    app's version in the tickets (default: the front end's ``environ[NODE_KEY]`` and
    ``environ[VERSION_KEY]``, else :func:`~scalekit.core.instance.node_name` and
    :func:`~scalekit.core.instance.app_version`). ``trusted_proxies``: addresses and
    networks of the balancers whose ``X-Forwarded-For`` gives the client's address (see
    :mod:`scalekit.wsgi.proxies`); without them the client is ``REMOTE_ADDR``.

    The request's id (the front end's ``environ[REQUEST_ID_KEY]`` or the current
    :data:`scalekit.core.context.request_id`, else the incoming ``X-Request-ID`` if it is a
    sane token, else a new one) is that context variable and ``environ[REQUEST_ID_KEY]``
    until the response is closed; the error page and the ticket show the same id.
    """

    @known_options()
    def __init__(
        self,
        app: Callable,
        store: TicketStore | str = DEFAULT_URL,
        app_name: str = "app",
        repeat_window: float = REPEAT_WINDOW,
        error_page: str | ErrorPage | None = None,
        node: str | None = None,
        trusted_proxies: Iterable[str] | str = (),
        version: str | None = None,
    ):
        self.app = app
        self.node, self.version = node, version  # None: the front end's, else this process's
        self._instance = (node_name(), app_version())
        self.trusted_proxies = networks(trusted_proxies, "trusted_proxies")
        self.error_page = _template_page(error_page) if isinstance(error_page, str) else error_page
        self.store = open_store(store) if isinstance(store, str) else store
        self.app_name = app_name
        self.repeat_window = repeat_window
        self._recent: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        versions()  # read once now, not in the first failing request

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = environ.get(REQUEST_ID_KEY) or context.request_id.get() or request_id(environ)
        environ[REQUEST_ID_KEY] = request
        environ.setdefault(TICKET_CAPTURE_KEY, self.capture)  # an outer one covers more
        token = context.request_id.set(request)
        try:
            result = self.app(environ, start_response)
        except Exception as exc:  # noqa: BLE001 - every failure of the app becomes a ticket
            result = self._error_page(exc, environ, start_response, request)
        except BaseException:
            context.reset(context.request_id, token)
            raise
        if type(result) is list:  # a finished body: nothing left that can fail
            context.reset(context.request_id, token)
            return result
        return _Guarded(result, self, environ, start_response, request, token)

    def capture(self, exc: BaseException, environ: dict, request_id: str) -> str | None:
        """Write the ticket of ``exc`` raised serving ``environ`` (or count it on the same
        failure's recent ticket); its id, or None (logged) if it could not be written.

        Safe from any thread: a deadline's watchdog calls it with an exception whose
        traceback it built from the stuck thread's frames, while that thread runs on."""
        try:
            failure = signature(exc)
            ticket = self._count_repeat(failure)
            if ticket is None:
                client = client_address(environ, self.trusted_proxies)
                node, version = self._instance
                ticket = build(
                    exc,
                    environ,
                    app_name=self.app_name,
                    request_id=request_id,
                    node=self.node or environ.get(NODE_KEY) or node,
                    client="" if client is None else str(client),
                    version=self.version or environ.get(VERSION_KEY) or version,
                )
                self.store.save(ticket)
                self._remember(failure, ticket)
        except Exception:
            log.error("%s failed, and no ticket could be written:", request_line(environ),
                      exc_info=exc)  # fmt: skip
            log.exception("writing the ticket failed:")
            return None
        environ[ENVIRON_KEY] = ticket["id"]
        return ticket["id"]

    def _count_repeat(self, failure: tuple[str, str]) -> dict[str, Any] | None:
        """The same failure's ticket of the last ``repeat_window`` seconds, saved again
        with this failure counted (one at a time, so the highest count is saved last), or
        None."""
        now = time.time()
        with self._lock:
            first, ticket = self._recent.get(failure, (0.0, None))
            if ticket is None or now - first >= self.repeat_window:
                return None
            repeated(ticket, now)
            self.store.save(ticket)
            return ticket

    def _remember(self, failure: tuple[str, str], ticket: dict[str, Any]) -> None:
        if self.repeat_window <= 0:
            return
        with self._lock:
            recent = self._recent
            recent[failure] = (time.time(), ticket)
            while len(recent) > _REMEMBERED:
                del recent[next(iter(recent))]  # the oldest

    def _error_page(
        self, exc: Exception, environ: dict, start_response: Callable, request: str
    ) -> list[bytes]:
        ticket = self.capture(exc, environ, request)
        if ticket is not None:
            log.error(
                "%s failed: %s: %s (ticket %s)",
                request_line(environ),
                type(exc).__name__,
                scrub_text(str(exc)),
                ticket,
            )
        content_type, body = self._body(environ.get("HTTP_ACCEPT", ""), ticket, request)
        ids = [("X-Request-ID", request)]
        if ticket is not None:
            ids.append(("X-Ticket-ID", ticket))
        answer = page("500 Internal Server Error", content_type, body, NO_STORE, *ids)
        try:
            return answer.send(start_response, sys.exc_info())
        except Exception:  # noqa: BLE001 - the headers went out already: nothing more can be said
            log.error("the error page for ticket %s could not be sent: response started", ticket)
            return []

    def _body(self, accept: str, ticket: str | None, request: str) -> tuple[str, bytes]:
        """The custom error page if there is one and it works, else :func:`error_body`."""
        if self.error_page is not None and not prefers_json(accept):
            try:
                return HTML, self.error_page(ticket, request).encode()
            except Exception:  # a failing page must not hide the error: the built-in one
                log.exception("the custom error page failed (ticket %s)", ticket)
        return error_body(accept, ticket, request)


def _template_page(path: str) -> ErrorPage:
    """The :data:`ErrorPage` of the HTML file ``path``, read now."""
    template = read_template(path, "error page")
    return lambda ticket, request: fill(template, {"ticket": ticket or "", "request_id": request})


class _Guarded(ClosingBody):
    """The app's body: an error while iterating it becomes the error page if nothing was
    sent yet, else a ticket and a log line, and the body ends there."""

    def __init__(self, body: Iterable[bytes], middleware: TicketMiddleware, environ: dict,
                 start_response: Callable, request: str, token: Token):  # fmt: skip
        super().__init__(body, lambda: context.reset(context.request_id, token))
        self.middleware, self.environ, self.start_response = middleware, environ, start_response
        self.request = request

    def __iter__(self) -> Iterator[bytes]:
        sent = False
        try:
            for chunk in self.body:
                sent = sent or bool(chunk)
                yield chunk
        except Exception as exc:  # noqa: BLE001 - a failing body becomes a ticket too
            environ = self.environ
            if not sent:
                yield from self.middleware._error_page(
                    exc, environ, self.start_response, self.request
                )
                return
            ticket = self.middleware.capture(exc, environ, self.request)
            log.error(
                "%s failed after its response started (ticket %s): %s: %s; the response ends here",
                request_line(environ),
                ticket,
                type(exc).__name__,
                scrub_text(str(exc)),
            )


@known_options()
def with_tickets(
    store: TicketStore | str = DEFAULT_URL,
    app_name: str = "app",
    repeat_window: float = REPEAT_WINDOW,
    error_page: str | ErrorPage | None = None,
    node: str | None = None,
    trusted_proxies: Iterable[str] | str = (),
    version: str | None = None,
) -> Callable[[Callable], Callable]:
    """Decorate one WSGI view so its errors become tickets, as ``TicketMiddleware`` does."""
    return per_view(
        TicketMiddleware,
        store,
        app_name,
        repeat_window,
        error_page,
        node,
        trusted_proxies,
        version,
    )
