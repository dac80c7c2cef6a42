"""Shared helpers of the front end's tests: a request environ, an in-process call, a small
app with one path per kind of response.

- :func:`make_environ` builds a WSGI environ (headers by their HTTP names).
- :func:`call` sends one request to a WSGI app in-process and returns a
  :class:`tests.wsgi.Response` (whole body, ``close()`` called).
- :func:`app` answers by path: ``/hello``,
  ``/environ`` (the front end's facts as JSON), ``/big?n=BYTES`` (a finished body),
  ``/stream?chunks=N&size=BYTES`` (a generator), ``/cookie``, ``/boom`` (raises).

It imports nothing of the front end itself, so that a broken part never stops the others'
tests from being collected.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from urllib.parse import parse_qs

from scalekit.wsgi.environ import NODE_KEY, PEER_KEY, REQUEST_ID_KEY, VERSION_KEY
from tests.wsgi import Response


def make_environ(path: str = "/", method: str = "GET", headers: dict | None = None,
                 remote: str = "127.0.0.1", https: bool = False) -> dict:  # fmt: skip
    """A WSGI environ for ``method path?query`` from ``remote``, with ``headers``."""
    path, _, query = path.partition("?")
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
        "SCRIPT_NAME": "", "SERVER_NAME": "testserver", "SERVER_PORT": "443" if https else "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": remote,
        "wsgi.url_scheme": "https" if https else "http", "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0), "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False,
    }  # fmt: skip
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    return environ


def call(app, path: str = "/", method: str = "GET", headers: dict | None = None,
         **options) -> Response:  # fmt: skip
    """One request to ``app``, its whole response (``write()`` calls included)."""
    environ = make_environ(path, method, headers, **options)
    started: list = []
    written: list[bytes] = []

    def start_response(status, response_headers, exc_info=None):
        if started and exc_info is None:
            raise AssertionError("start_response called twice without exc_info")
        started[:] = [status, list(response_headers)]
        written.clear()
        return written.append

    result = app(environ, start_response)
    try:
        body = b"".join([*written, *result])
    finally:
        if hasattr(result, "close"):
            result.close()
    return Response(int(started[0].split()[0]), started[1], body)


def app(environ: dict, start_response) -> Iterator[bytes] | list[bytes]:
    """The test app: one kind of response per path (see the module docstring)."""
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/environ":
        facts = {name: environ.get(key) for name, key in (
            ("request_id", REQUEST_ID_KEY), ("node", NODE_KEY), ("version", VERSION_KEY),
            ("peer", PEER_KEY), ("x_request_id", "HTTP_X_REQUEST_ID"),
            ("remote_addr", "REMOTE_ADDR"),
        )}  # fmt: skip
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(facts).encode()]
    if path == "/big":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x" * int(query.get("n", "10"))]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"y" * int(query.get("size", "10")) for _ in range(int(query.get("chunks", "3"))))
    if path == "/cookie":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Set-Cookie", "a=1")])
        return [b"cookie set"]
    if path == "/boom":
        raise RuntimeError("boom: password=hunter2")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
