"""TicketViewer: a small WSGI admin app to browse tickets in any store.

Pages (relative to where it is mounted): ``/`` the newest tickets, ``/summary`` tickets
grouped by exception type and location, ``/ticket/<id>`` one ticket. Access needs a
client address in ``allowed`` (addresses or networks, matched against ``REMOTE_ADDR``
only: behind a proxy on the same host every client looks local, so use a token there) or
the ``token``, sent as ``Authorization: Bearer <token>`` or once as ``?token=<token>``: that
answer sets a cookie (HttpOnly, SameSite=Strict, the viewer's path, signed with a key
derived from the token, valid ``COOKIE_MAX_AGE`` seconds) and links never carry the token
(:class:`scalekit.wsgi.guard.Guard`).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable
from typing import Any

from scalekit.core.errors import CorruptData, StoreUnavailable
from scalekit.tickets.stores import TicketStore, open_store
from scalekit.tickets.ticket import Entry, Group
from scalekit.wsgi.guard import COOKIE_MAX_AGE, Guard, admin_page

__all__ = ["COOKIE", "COOKIE_MAX_AGE", "TicketViewer"]

log = logging.getLogger("scalekit.tickets")

COOKIE = "scalekit_tickets"
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
        self.guard = Guard("tickets", "TicketViewer", allowed=allowed, token=token)
        self.store = open_store(store) if isinstance(store, str) else store
        self.limit = limit

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        granted = self.guard.admit(environ)
        if granted is None:
            refused = "<p>Access to the tickets is refused.</p>"
            return admin_page("403 Forbidden", "Forbidden", refused).send(start_response)
        root = environ.get("SCRIPT_NAME", "").rstrip("/")
        status, title, body = self._page(_Page(root), environ.get("PATH_INFO", "") or "/")
        return admin_page(status, title, body, *granted).send(start_response)

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
            f"<td>{_e(item.app)}</td><td>{_e(item.node)}</td><td>{_e(item.version)}</td>"
            f"<td>{_e(item.summary)}</td><td><code>{_e(item.location)}</code></td></tr>"
            for item in entries
        )
        head = "<tr><th>UTC</th><th>ticket</th><th>app</th><th>node</th><th>version</th>"
        return (
            f"{self.nav()}<p>{len(entries)} newest ticket(s)</p><table>{head}"
            f"<th>error</th><th>where</th></tr>{rows}</table>"
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
            "version": ticket.get("version", "-"),
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
