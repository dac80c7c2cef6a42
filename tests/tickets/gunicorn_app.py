"""The WSGI app the gunicorn test serves: ``tests.tickets.apps.app`` in a TicketMiddleware
writing to the folder named by ``SCALEKIT_TEST_TICKETS``."""

import os

from scalekit.tickets import TicketMiddleware
from tests.tickets.apps import app

application = TicketMiddleware(app, os.environ["SCALEKIT_TEST_TICKETS"], app_name="shop")
