"""The response rules of the front end: the app's headers cleaned before they leave, a failure
recorded (ticket or log) and answered with the 500 page, and the abort of a response that
went wrong after its headers.

Header hygiene (:func:`clean_headers`), in one pass over the app's headers:

- hop-by-hop headers (``Connection``, ``Keep-Alive``, ``Proxy-Authenticate``,
  ``Proxy-Authorization``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``) are the
  server's to send, not the app's: dropped (but a ``101 Switching Protocols``, a WebSocket's
  answer, keeps its ``Connection`` and ``Upgrade``: they are what it says);
- a header whose name is not an HTTP token, whose value is not printable ASCII (a CR or LF
  would split the response), or a ``Content-Length`` that is not a number: dropped;
  each drop is logged (``scalekit.frontend``, WARNING) with the header's name and the request
  id, never its value (it could be a secret);
- a response that sets a cookie gets ``Cache-Control: private`` (unless already private or
  ``no-store``), ``Vary: Cookie`` and an ``Expires`` in the past, so no shared cache, not even
  an HTTP/1.0 one, hands one user's cookie to another;
- ``Content-Type`` defaults to ``text/html; charset=utf-8`` on every response that has a
  body, ``HEAD`` included (it answers with ``GET``'s headers); not on 1xx, 204 and 304.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import traceback
from collections.abc import Iterable

from scalekit.core.errors import ScalekitError
from scalekit.core.scrub import scrub_text
from scalekit.wsgi.environ import TICKET_CAPTURE_KEY
from scalekit.wsgi.headers import make_private, without_expiry
from scalekit.wsgi.http import request_line
from scalekit.wsgi.pages import HTML, NO_STORE, Page, internal_error, page

__all__ = [
    "HOP_BY_HOP",
    "ResponseAborted",
    "ResponseTooLarge",
    "abort",
    "bodiless",
    "clean_headers",
    "error_page",
    "report",
    "status_code",
]

log = logging.getLogger("scalekit.frontend")

#: Response headers that concern one connection, sent by the server alone (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
     "trailer", "transfer-encoding", "upgrade"}
)  # fmt: skip
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")  # printable ASCII and tab: no CR, LF, NUL, DEL
_SPECIAL = {
    **dict.fromkeys(HOP_BY_HOP, "drop"),
    "connection": "switch",
    "upgrade": "switch",
    "set-cookie": "cookie",
    "content-type": "type",
    "content-length": "length",
    "x-request-id": "ours",
    "x-node": "ours",
}
#: What each header name an app sent is (``"plain"``, ``"bad"``, a kind of :data:`_SPECIAL`),
#: learnt once: an app sends a few names over and over. Bounded: past it, names are looked
#: at every time.
_KINDS: dict[str, str] = {}
_KINDS_KEPT = 1024


class ResponseTooLarge(ScalekitError):
    """The app's response is over the front end's ``max_response_size``."""


class ResponseAborted(ScalekitError):
    """A response went wrong after its headers were sent: the server must drop the connection
    (raised only when the server gave no socket to shut down)."""


def bodiless(status: str) -> bool:
    """True for a status that never has a body: 1xx, 204, 304."""
    return status[:1] == "1" or status[:3] in ("204", "304")


def status_code(status: str | None) -> int:
    """The number of a WSGI status line (0 when there is none)."""
    try:
        return int((status or "0")[:3])
    except ValueError:
        return 0


def clean_headers(
    status: str, headers: Iterable[tuple[str, str]], request_id: str, replaced: frozenset[str]
) -> tuple[list[tuple[str, str]], int | None]:
    """The app's ``headers`` by the rules of the module docstring, without those named in
    ``replaced`` (lower case: the front end sends its own), and the declared
    ``Content-Length`` (None if none)."""
    kept = []
    cookie = typed = False
    length = None
    for header in headers:
        name, value = header
        try:
            kind = _KINDS.get(name) or _kind(name)
            good = (
                kind != "bad"
                and kind != "drop"
                and value.isascii()
                and (value.isprintable() or _VALUE.fullmatch(value) is not None)
            )
        except (AttributeError, TypeError):  # not a str (PEP 3333 wants str)
            good = False
        if not good:
            log.warning("response header %.80r dropped (request %s)", name, request_id)
            continue
        if kind != "plain":
            if kind == "cookie":
                cookie = True
            elif kind == "type":
                typed = True
            elif kind == "ours":
                if name.lower() in replaced:
                    continue
            elif kind == "switch":  # hop-by-hop, but what a 101 (a WebSocket) is about
                if status[:3] != "101":
                    log.warning("response header %r dropped (request %s)", name, request_id)
                    continue
            elif value.strip().isdigit():  # Content-Length
                length = int(value)
            else:
                log.warning("response header %r dropped (request %s)", name, request_id)
                continue
        kept.append(header)
    if cookie:
        kept = without_expiry(make_private(kept))
    if not typed and not bodiless(status):
        kept.append(("Content-Type", HTML))
    return kept, length


def _kind(name: str) -> str:
    """What the header ``name`` is (see :data:`_KINDS`), remembered while there is room."""
    kind = "bad" if _TOKEN.fullmatch(name) is None else _SPECIAL.get(name.lower(), "plain")
    if len(_KINDS) < _KINDS_KEPT:
        _KINDS[name] = kind
    return kind


def report(exc: BaseException, environ: dict, request_id: str) -> str | None:
    """Record a failure: its ticket written through the ticket middleware below
    (``environ[TICKET_CAPTURE_KEY]``), else its traceback logged, scrubbed. The ticket id,
    or None."""
    capture = environ.get(TICKET_CAPTURE_KEY)
    ticket = None
    if capture is not None:
        try:
            ticket = capture(exc, environ, request_id)
        except Exception:  # a failing ticket store must not hide the error
            log.exception("writing the ticket failed (request %s)", request_id)
    where = request_line(environ)
    if ticket is not None:
        log.error("%s failed: %s (ticket %s, request %s)", where, type(exc).__name__, ticket,
                  request_id)  # fmt: skip
    else:
        trace = "".join(traceback.format_exception(exc))
        log.error("%s failed (request %s): %s", where, request_id, scrub_text(trace))
    return ticket


def error_page(
    environ: dict, ticket: str | None, request_id: str, headers: Iterable[tuple[str, str]]
) -> Page:
    """The 500 page (not stored by any cache) of a request whose response failed, with
    ``headers`` added."""
    content_type, body = internal_error(environ.get("HTTP_ACCEPT", ""), ticket, request_id)
    ids = [("X-Request-ID", request_id), *headers]
    if ticket is not None:
        ids.append(("X-Ticket-ID", ticket))
    return page("500 Internal Server Error", content_type, body, NO_STORE, *ids)


def abort(environ: dict, request_id: str) -> None:
    """End a response whose headers are sent but whose body cannot be: the connection is
    shut down (gunicorn's ``environ["gunicorn.socket"]``), so the client sees a truncated
    response, not a short one that looks whole; :class:`ResponseAborted` for a server that
    gave no socket (it drops the connection on an error in the body)."""
    connection = environ.get("gunicorn.socket")
    if connection is None:
        raise ResponseAborted(
            f"response of request {request_id} aborted after its headers"
        ) from None  # the error that led here is logged: not again, unscrubbed, by the server
    with contextlib.suppress(OSError):  # the client is gone already
        connection.shutdown(socket.SHUT_RDWR)
