"""Fixtures for the maintenance tests: a flag on each backend, an app, a WSGI caller."""

from __future__ import annotations

import io
import uuid

import pytest

from scalekit.maintenance import State, open_flag
from tests.wsgi import Response

FLAG_KINDS = ["file", "redis"]


@pytest.fixture
def app_name() -> str:
    """A fresh app name per test, so tests sharing a server never see each other's flag."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(params=FLAG_KINDS)
def flag_kind(request) -> str:
    return request.param


@pytest.fixture
def flag_url(flag_kind, request, tmp_path) -> str:
    if flag_kind == "file":
        return f"file://{tmp_path}/MAINTENANCE"
    return request.getfixturevalue("redis_url")


@pytest.fixture
def flag(flag_url, app_name):
    """The flag storage the operator writes to (as the CLI does)."""
    opened = open_flag(flag_url, app_name)
    yield opened
    opened.close()


def hello(environ, start_response):
    """The app behind the middleware: echoes the method and path."""
    body = f"app: {environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def call(app, path="/", method="GET", headers=None, remote="203.0.113.9", body=b""):
    """One request to ``app`` in-process, from ``remote``; ``headers`` as HTTP sends them."""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SCRIPT_NAME": "",
        "SERVER_NAME": "testserver", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": remote, "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0), "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False, "CONTENT_LENGTH": str(len(body)),
    }  # fmt: skip
    for name, value in (headers or {}).items():
        if name.lower() == "content-type":
            environ["CONTENT_TYPE"] = value
        else:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    started = []

    def start_response(status, response_headers, exc_info=None):
        started[:] = [status, response_headers]

    result = app(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return Response(int(started[0].split()[0]), list(started[1]), data)


FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html,*/*;q=0.8"}
JSON = {"Accept": "application/json"}

__all__ = ["FORM", "JSON", "State", "call", "hello"]
