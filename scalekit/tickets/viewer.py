"""TicketViewer: a small WSGI admin app to browse tickets in any store.

Pages (relative to where it is mounted): ``/`` the newest tickets, ``/summary`` tickets
grouped by exception type and location, ``/ticket/<id>`` one ticket. Access needs a
client address in ``allowed`` (addresses or networks, matched against ``REMOTE_ADDR``
only: behind a proxy on the same host every client looks local, so use a token there) or
the ``token``, sent as ``Authorization: Bearer <token>`` or once as ``?token=<token>``: that
answer sets a cookie (HttpOnly, SameSite=Strict, the viewer's path, signed with a key
derived from the token, valid ``COOKIE_MAX_AGE`` seconds) and links never carry the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, quote

from scalekit.core.errors import ConfigError, CorruptData, StoreUnavailable
from scalekit.tickets.stores import TicketStore, open_store
from scalekit.tickets.ticket import Entry, Group
from scalekit.wsgi import pages
from scalekit.wsgi.cookies import Cookie, cookie_value

log = logging.getLogger("scalekit.tickets")

COOKIE = "scalekit_tickets"
COOKIE_MAX_AGE = 8 * 3600

_STYLE = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;"
    "padding:4px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}"
    "pre{background:#f7f7f7;padding:8px;overflow:auto}.hl{background:#ffe9a8}"
    "nav a{margin-right:1em}code{font-size:13px}h2{margin-top:1.5em}"
)
_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = (
    pages.NO_STORE,
    ("Content-Security-Policy", _POLICY),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
_e = html.escape


class TicketViewer:
    """Browse ``store`` (a :class:`TicketStore` or its URL); see the module docstring."""

    def __init__(
        self,
        store: TicketStore | str,
        *,
        allowed: Iterable[str] = (),
        token: str | None = None,
        limit: int = 200,
    ):
        try:
            self.allowed = tuple(ipaddress.ip_network(item, strict=False) for item in allowed)
        except ValueError as exc:
            raise ConfigError(f"TicketViewer allowed={list(allowed)!r}: {exc}") from None
        if not self.allowed and not token:
            raise ConfigError("TicketViewer needs allowed=[addresses] or a token=, or both")
        self.store = open_store(store) if isinstance(store, str) else store
        self.token, self.limit = token, limit
        self._key = hmac.digest((token or "").encode(), b"scalekit:tickets viewer", hashlib.sha256)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        given = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
        if not self._permitted(environ, given):
            return _respond(
                start_response,
                "403 Forbidden",
                "Forbidden",
                "<p>Access to the tickets is refused.</p>",
            )
        root = environ.get("SCRIPT_NAME", "").rstrip("/")
        cookie = ()
        if self._is_token(given):  # the token, used once: a cookie from now on
            jar = Cookie(COOKIE, path=quote(root) or "/", samesite="Strict", max_age=COOKIE_MAX_AGE)
            https = environ.get("wsgi.url_scheme") == "https"
            cookie = (jar.set_header(self._cookie(time.time() + COOKIE_MAX_AGE), https=https),)
        status, title, body = self._page(_Page(root), environ.get("PATH_INFO", "") or "/")
        return _respond(start_response, status, title, body, *cookie)

    def _page(self, page: _Page, path: str) -> tuple[str, str, str]:
        """The status, title and body of the page at ``path``."""
        try:
            if path == "/":
                return "200 OK", "Tickets", page.entries(self.store.entries(self.limit))
            if path == "/summary":
                return "200 OK", "Summary", page.summary(self.store.summary())
            if path.startswith("/ticket/"):
                ticket = self.store.load(path[len("/ticket/") :])
                if ticket is not None:
                    return "200 OK", f"Ticket {ticket['id']}", page.ticket(ticket)
        except StoreUnavailable as exc:
            return "503 Service Unavailable", "Store unavailable", f"<p>{_e(str(exc))}</p>"
        except (CorruptData, LookupError, TypeError, ValueError, AttributeError) as exc:
            log.warning("ticket page %s cannot be shown: %s: %s", path, type(exc).__name__, exc)
            return "404 Not Found", "Not found", page.nav() + "<p>This ticket cannot be read.</p>"
        return "404 Not Found", "Not found", page.nav() + "<p>No such page or ticket.</p>"

    def _cookie(self, expires: float) -> str:
        """The cookie value that grants access until ``expires``: the time and its MAC."""
        stamp = str(int(expires))  # 10 digits until the year 2286
        mac = hmac.digest(self._key, stamp.encode(), hashlib.sha256)
        return f"{stamp}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def _is_token(self, sent: str) -> bool:
        return bool(self.token and sent) and hmac.compare_digest(sent.encode(), self.token.encode())

    def _permitted(self, environ: dict, given: str) -> bool:
        if self.token:
            header = environ.get("HTTP_AUTHORIZATION", "")
            if self._is_token(header[7:] if header[:7].lower() == "bearer " else given):
                return True
            held = cookie_value(environ.get("HTTP_COOKIE", ""), COOKIE) or ""
            stamp = held.partition(".")[0]
            fresh = stamp.isascii() and stamp.isdigit() and time.time() < int(stamp[:12])
            if fresh and hmac.compare_digest(held.encode(), self._cookie(int(stamp[:12])).encode()):
                return True
        try:
            address = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        return any(address in network for network in self.allowed)


class _Page:
    """HTML fragments for one request: links keep the mount point (never the token)."""

    def __init__(self, root: str):
        self.root = root

    def link(self, path: str, text: str) -> str:
        return f'<a href="{_e(self.root + path)}">{_e(text)}</a>'

    def nav(self) -> str:
        return f"<nav>{self.link('/', 'Newest')}{self.link('/summary', 'Summary')}</nav>"

    def entries(self, entries: list[Entry]) -> str:
        rows = "".join(
            f"<tr><td>{_e(item.created)}</td>"
            f"<td>{self.link('/ticket/' + item.ticket_id, item.ticket_id)}</td>"
            f"<td>{_e(item.app)}</td><td>{_e(item.node)}</td>"
            f"<td>{_e(item.summary)}</td><td><code>{_e(item.location)}</code></td></tr>"
            for item in entries
        )
        head = "<tr><th>UTC</th><th>ticket</th><th>app</th><th>node</th><th>error</th>"
        return (
            f"{self.nav()}<p>{len(entries)} newest ticket(s)</p><table>{head}"
            f"<th>where</th></tr>{rows}</table>"
        )

    def summary(self, groups: list[Group]) -> str:
        rows = "".join(
            f"<tr><td>{group.count}</td><td>{_e(group.error_type)}</td>"
            f"<td><code>{_e(group.location)}</code></td><td>{_e(group.first_seen)}</td>"
            f"<td>{_e(group.last_seen)}</td></tr>"
            for group in groups
        )
        head = "<tr><th>count</th><th>error</th><th>where</th><th>first seen</th>"
        return f"{self.nav()}<table>{head}<th>last seen</th></tr>{rows}</table>"

    def ticket(self, ticket: dict[str, Any]) -> str:
        error, request = ticket.get("error", {}), ticket.get("request", {})
        facts = {
            "app": ticket.get("app"),
            "time (UTC)": ticket.get("created"),
            "node": ticket.get("node", ticket.get("hostname")),
            "host": ticket.get("hostname"),
            "pid": ticket.get("pid"),
            "request id": ticket.get("request_id"),
            "failures counted": ticket.get("count", 1),
            "last seen (UTC)": ticket.get("last_seen", ticket.get("created")),
            "request": f"{request.get('method')} {request.get('path')}"
            + (f"?{request['query']}" if request.get("query") else ""),
            "client": request.get("client"),
            "via (proxy)": request.get("peer"),
            "where": error.get("location"),
            "python": ticket.get("versions", {}).get("python"),
        }
        parts = [
            self.nav(),
            f"<h2>{_e(str(error.get('summary', '')))}</h2>",
            _table(facts),
            "<h2>Traceback</h2>",
            f"<pre>{_e(str(error.get('traceback', '')))}</pre>",
            "<h2>Frames</h2>",
        ]
        for frame in reversed(ticket.get("frames", [])):
            parts.append(
                f"<h3><code>{_e(str(frame.get('file')))}:{_e(str(frame.get('line')))} in "
                f"{_e(str(frame.get('function')))}</code></h3>"
            )
            context = frame.get("context", {})
            first = int(context.get("first_line", 0))
            lines = [
                f'<span class="{"hl" if first + n == frame.get("line") else ""}">'
                f"{first + n:>5}  {_e(line)}</span>"
                for n, line in enumerate(context.get("lines", []))
            ]
            parts.append(f"<pre>{chr(10).join(lines)}</pre>{_table(frame.get('locals', {}))}")
        parts += ["<h2>Request headers</h2>", _table(request.get("headers", {}))]
        return "".join(parts)


def _table(values: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{_e(str(k))}</th><td><code>{_e(str(v))}</code></td></tr>"
        for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def _respond(
    start_response: Callable, status: str, title: str, body: str, *headers: tuple[str, str]
) -> list[bytes]:
    document = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>"
    )
    answer = pages.page(status, pages.HTML, document.encode(), *_HEADERS, *headers)
    return answer.send(start_response)
