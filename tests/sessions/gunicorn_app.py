"""The WSGI app the gunicorn test runs with ``--preload``: the store is opened and used in
the master process before workers fork, as a model file would do it."""

import json
import os
import time

from scalekit import sessions

store = sessions.open_store(
    os.environ["SCALEKIT_TEST_STORE"], app_name=os.environ["SCALEKIT_TEST_APP"]
)
store.load("PreloadCheckPreloadCheck")  # the master connects before forking
delay = float(os.environ.get("SCALEKIT_TEST_DELAY", "0"))  # seconds each request takes


def count(environ, start_response):
    session = sessions.current()
    session.n = (session.n or 0) + 1
    time.sleep(delay)
    body = json.dumps({"n": session.n, "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


application = sessions.SessionMiddleware(count, store, "gunicorn-test-secret-0123456789abcdef")
