"""The WSGI app the gunicorn test runs with ``--preload``: the middleware reads the flag in
the master before workers fork, as a model file would. GET answers which worker served it
and the maintenance mode that worker saw."""

import json
import os

from scalekit.maintenance import ENVIRON_KEY, MaintenanceMiddleware


def whoami(environ, start_response):
    state = environ.get(ENVIRON_KEY)
    body = json.dumps({"pid": os.getpid(), "mode": state and state.mode}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


application = MaintenanceMiddleware(
    whoami, os.environ["SCALEKIT_MAINTENANCE_FLAG"], app_name=os.environ["SCALEKIT_TEST_APP"],
    cache_seconds=float(os.environ["SCALEKIT_TEST_CACHE"]),
)  # fmt: skip
application.maintenance.refresh(force=True)  # the master reads (and connects) before forking
