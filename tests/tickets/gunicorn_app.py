"""The WSGI app the gunicorn tests serve: ``tests.tickets.apps.app`` in a TicketMiddleware
writing to the folder named by ``SCALEKIT_TEST_TICKETS``, trusting the comma-separated
proxies of ``SCALEKIT_TEST_TRUSTED`` (none if unset)."""

import os

from scalekit.tickets import TicketMiddleware
from tests.tickets.apps import app

application = TicketMiddleware(
    app,
    os.environ["SCALEKIT_TEST_TICKETS"],
    app_name="shop",
    trusted_proxies=[
        proxy for proxy in os.environ.get("SCALEKIT_TEST_TRUSTED", "").split(",") if proxy
    ],
)
