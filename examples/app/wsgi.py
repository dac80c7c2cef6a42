"""The demo's WSGI entry point (``gunicorn -c examples/gunicorn.conf.py``): the guestbook in
every scalekit piece, outermost first as in DESIGN.md: the front end, maintenance, tickets,
session, database, then static files or the views.

The front end corrects the client's address, scheme and host from the trusted balancers
only, so the layers below (maintenance's bypass, the tickets' client, the sessions' Secure
cookies) read them from the environ and are given no proxies of their own.
"""

from __future__ import annotations

import config
import models
import views

from scalekit import db, sessions, tickets
from scalekit.frontend import FrontendMiddleware
from scalekit.maintenance import MaintenanceMiddleware
from scalekit.static import StaticFiles

if config.MIGRATE:  # one machine: migrate at start (with preload_app, once, in the master)
    models.migrate()

application = StaticFiles(views.application, config.STATIC, prefix="/static/")
application = db.DBMiddleware(application, models.replicas, define=models.define_tables)
application = sessions.SessionMiddleware(
    application, sessions.open_store(config.SESSION_STORE, app_name=config.APP),
    secret=config.session_secrets(), app_name=config.APP,
)  # fmt: skip
application = tickets.TicketMiddleware(application, config.TICKETS, app_name=config.APP)
application = MaintenanceMiddleware(
    application, config.MAINTENANCE_FLAG, app_name=config.APP,
    exempt=("/static/", "/healthz"), secret=config.MAINTENANCE_SECRET,
)  # fmt: skip
application = FrontendMiddleware(
    application, trusted_proxies=config.TRUSTED_PROXIES, node=config.NODE,
    version=config.VERSION, node_header=config.NODE_HEADER,
    access_log="json" if config.ACCESS_LOG else None,
    deadline=config.DEADLINE, server_timeout=config.SERVER_TIMEOUT,
)  # fmt: skip
