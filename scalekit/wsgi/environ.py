"""The keys under which the pieces leave a request's objects in the WSGI environ.

One place for all of them, so a piece can find another's object without importing that
piece (``scalekit.db`` pins a client in its session, ``cache.action`` skips requests that
carry one).
"""

from __future__ import annotations

__all__ = [
    "DB_KEY",
    "MAINTENANCE_KEY",
    "NODE_KEY",
    "PEER_KEY",
    "REQUEST_ID_KEY",
    "SESSION_KEY",
    "TICKET_CAPTURE_KEY",
    "TICKET_KEY",
    "VERSION_KEY",
]

SESSION_KEY = "scalekit.session"  # the request's Session (scalekit.sessions)
DB_KEY = "scalekit.db"  # the request's DBScope (scalekit.db)
MAINTENANCE_KEY = "scalekit.maintenance"  # the active maintenance State, for a banner
TICKET_KEY = "scalekit.ticket"  # the id of the request's error ticket, once written
TICKET_CAPTURE_KEY = (
    "scalekit.ticket.capture"  # TicketMiddleware's capture(exc, environ, request_id)
)
REQUEST_ID_KEY = "scalekit.request_id"  # the request's id (scalekit.frontend, else tickets)
NODE_KEY = "scalekit.node"  # this server's name (App Engine's INSTANCE_ID), by scalekit.frontend
VERSION_KEY = "scalekit.version"  # the app's version (App Engine's CURRENT_VERSION_ID)
PEER_KEY = "scalekit.peer"  # the TCP peer's address before trusted proxies' headers applied
