"""FrontendMiddleware and with_frontend, through WSGI and under a real gunicorn: the request
id, the instance facts, the access record, the size limit, an escaping exception, options."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import logging
import os
import socket
import wsgiref.util

import pytest

from scalekit.core import context
from scalekit.core.errors import ConfigError
from scalekit.frontend import FrontendMiddleware, with_frontend
from scalekit.frontend.responses import ResponseAborted
from scalekit.wsgi.environ import TICKET_CAPTURE_KEY
from tests.frontend.conftest import app, call, make_environ
from tests.gunicorn import gunicorn

#: The ``max_response_size`` of the served app: 64 KiB.
LIMIT = 64 << 10
OPTIONS = {"access_log": None, "compress": False, "deadline": None}


def files(environ, start_response):
    """``app``; ``/file``: this test file through the server's ``wsgi.file_wrapper``;
    ``/bad-header``: a header gunicorn refuses (and fails the whole response for)."""
    if environ["PATH_INFO"] == "/bad-header":
        start_response("200 OK", [("X-Secret", "token\r\nX-Injected: 1"), ("X-Fine", "1")])
        return [b"still answered"]
    if environ["PATH_INFO"] != "/file":
        return app(environ, start_response)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(os.path.getsize(__file__)))])  # fmt: skip
    return environ["wsgi.file_wrapper"](open(__file__, "rb"), 4096)  # closed by the server


#: ``files`` behind the front end, as the ``served`` gunicorn runs it.
application = FrontendMiddleware(
    files, max_response_size=LIMIT, node="node-test", node_header=True, version="v-test",
    deadline=20.0,
)  # fmt: skip


@pytest.fixture(scope="module", params=[1, 2], ids=["sync", "gthread"])
def served(request):
    """The port of a gunicorn serving :data:`application`: one worker, sync or threaded."""
    app_path = "tests.frontend.test_middleware:application"
    with gunicorn(app_path, {}, workers=1, threads=request.param) as port:
        yield port


@pytest.fixture(autouse=True)
def outside_a_request():
    """Each test starts outside a request, whatever an earlier test left in the context."""
    token = context.request_id.set(None)
    yield
    context.request_id.reset(token)


def get(port: int, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers=headers or {})
    return connection.getresponse()


def facts(response) -> dict:
    return json.loads(response.body)


# -- request id ------------------------------------------------------------------------
def test_a_request_gets_an_id_in_the_environ_the_context_and_the_response():
    seen = {}

    def view(environ, start_response):
        seen["context"] = context.request_id.get()
        return app(environ, start_response)

    response = call(FrontendMiddleware(view, **OPTIONS), "/environ")
    request = response.header("X-Request-ID")
    assert len(request) == 32 and int(request, 16) >= 0
    assert facts(response)["request_id"] == request == seen["context"]
    assert facts(response)["x_request_id"] == request  # for the ticket middleware below
    assert context.request_id.get() is None  # reset when the response was closed


def test_a_well_formed_incoming_id_is_kept_and_a_malformed_one_replaced():
    front = FrontendMiddleware(app, **OPTIONS)
    kept = call(front, "/environ", headers={"X-Request-ID": "lb-42.a:b@c"})
    assert kept.header("X-Request-ID") == facts(kept)["request_id"] == "lb-42.a:b@c"
    forged = call(front, "/environ", headers={"X-Request-ID": "a b\r\nX-Evil: 1"})
    assert forged.header("X-Request-ID") == facts(forged)["x_request_id"] != "a b\r\nX-Evil: 1"
    trace = "0af7651916cd43dd8448eb211c80319c"
    traced = call(front, "/environ", headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"})
    assert traced.header("X-Request-ID") == trace


def test_an_incoming_id_is_believed_from_a_trusted_proxy_only():
    front = FrontendMiddleware(app, trusted_proxies=["10.0.0.0/8"], **OPTIONS)
    via_proxy = call(front, "/environ", headers={"X-Request-ID": "from-lb"}, remote="10.1.2.3")
    assert via_proxy.header("X-Request-ID") == "from-lb"
    direct = call(front, "/environ", headers={"X-Request-ID": "from-lb"}, remote="203.0.113.9")
    assert direct.header("X-Request-ID") != "from-lb"


def test_a_streamed_body_keeps_the_id_until_it_is_closed():
    seen = []

    def view(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        seen.append(context.request_id.get())
        yield b"b"

    response = call(FrontendMiddleware(view, **OPTIONS))
    assert response.body == b"ab" and seen == [response.header("X-Request-ID")]
    assert context.request_id.get() is None


# -- instance facts ----------------------------------------------------------------------
def test_node_and_version_are_in_the_environ_and_x_node_only_when_asked():
    front = FrontendMiddleware(app, node="web-7", version="2026.12.1", **OPTIONS)
    response = call(front, "/environ")
    assert facts(response)["node"] == "web-7" and facts(response)["version"] == "2026.12.1"
    assert response.header("X-Node") is None
    shown = FrontendMiddleware(app, node="web-7", node_header=True, **OPTIONS)
    assert call(shown, "/environ").all("X-Node") == ["web-7"]


def test_node_and_version_default_to_the_process_environment(monkeypatch):
    monkeypatch.setenv("SCALEKIT_NODE", "node-from-env")
    monkeypatch.setenv("SCALEKIT_VERSION", "v-from-env")
    response = call(FrontendMiddleware(app, **OPTIONS), "/environ")
    assert facts(response)["node"] == "node-from-env"
    assert facts(response)["version"] == "v-from-env"
    monkeypatch.delenv("SCALEKIT_NODE")
    assert facts(call(FrontendMiddleware(app, **OPTIONS), "/environ"))["node"] == (
        socket.gethostname()
    )


# -- access record -------------------------------------------------------------------------
def access_records(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "scalekit.access"]


def test_one_access_record_per_request_with_the_bytes_sent(caplog):
    caplog.set_level(logging.INFO, "scalekit.access")
    front = FrontendMiddleware(app, node="web-7", version="v1", deadline=None)
    finished = call(front, "/big?n=3000", headers={"Accept-Encoding": "gzip"})
    streamed = call(front, "/stream?chunks=4&size=5")
    first, second = access_records(caplog)
    assert first["id"] == finished.header("X-Request-ID") and first["status"] == 200
    assert first["bytes"] == len(finished.body) == int(finished.header("Content-Length"))
    assert gzip.decompress(finished.body) == b"x" * 3000 and len(finished.body) < 3000
    assert (first["node"], first["version"], first["path"]) == ("web-7", "v1", "/big")
    assert second["bytes"] == len(streamed.body) == 20 and second["level"] is None


def test_the_access_record_has_the_highest_level_the_app_logged(caplog):
    caplog.set_level(logging.INFO)

    def view(environ, start_response):
        logging.getLogger("app").warning("careful")
        logging.getLogger("app").info("fine")
        return app(environ, start_response)

    call(FrontendMiddleware(view, deadline=None, compress=False))
    [record] = access_records(caplog)
    assert record["level"] == "WARNING"
    [warning] = [r for r in caplog.records if r.name == "app" and r.levelname == "WARNING"]
    assert warning.request_id == record["id"]


# -- compression wiring --------------------------------------------------------------------
def test_a_streamed_body_is_compressed_chunk_by_chunk():
    def view(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield from (b"line %d\n" % n for n in range(100))

    chunks = []
    environ = make_environ(headers={"Accept-Encoding": "gzip"})
    front = FrontendMiddleware(view, access_log=None, deadline=None)
    body = front(environ, lambda status, headers, exc_info=None: chunks.append(headers))
    data = list(body)
    body.close()
    assert ("Content-Encoding", "gzip") in chunks[0] and len(data) > 1
    assert gzip.decompress(b"".join(data)) == b"".join(b"line %d\n" % n for n in range(100))


def test_an_empty_stream_is_sent_empty_and_uncompressed():
    front = FrontendMiddleware(app, access_log=None, deadline=None)
    response = call(front, "/stream?chunks=0", headers={"Accept-Encoding": "gzip"})
    assert response.status == 200 and response.body == b""
    assert response.header("Content-Encoding") is None


def test_the_legacy_write_goes_through_the_same_checks():
    def view(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "x")])
        write(b"written ")
        return [b"returned"]

    response = call(FrontendMiddleware(view, **OPTIONS))
    assert response.body == b"written returned" and response.header("Connection") is None
    assert response.header("X-Request-ID")


def test_a_file_wrapper_is_handed_to_the_server_as_it_is(caplog):
    caplog.set_level(logging.INFO, "scalekit.access")
    environ = make_environ("/file")
    environ["wsgi.file_wrapper"] = wsgiref.util.FileWrapper
    body = FrontendMiddleware(files, deadline=None)(environ, lambda *args: None)
    assert type(body) is wsgiref.util.FileWrapper
    with open(__file__, "rb") as file:
        assert b"".join(body) == file.read()
    assert not access_records(caplog)
    body.close()
    [record] = access_records(caplog)
    assert record["bytes"] == os.path.getsize(__file__) and body.filelike.closed
    assert context.request_id.get() is None


def test_a_header_gunicorn_refuses_is_dropped_and_the_response_kept(served):
    response = get(served, "/bad-header")
    assert response.status == 200 and response.read() == b"still answered"
    assert response.getheader("X-Fine") == "1" and response.getheader("X-Secret") is None
    assert response.getheader("X-Injected") is None


def test_a_file_under_gunicorn(served):
    response = get(served, "/file")
    with open(__file__, "rb") as file:
        assert response.read() == file.read()
    assert response.getheader("X-Request-ID")


# -- size limit ------------------------------------------------------------------------------
def capturing(view, tickets: list):
    """``view`` below a stand-in for TicketMiddleware's environ hook: it records what the
    front end writes a ticket for."""

    def below(environ, start_response):
        def capture(exc, env, request_id):
            tickets.append((type(exc).__name__, str(exc), request_id))
            return f"ticket-{len(tickets)}"

        environ[TICKET_CAPTURE_KEY] = capture
        return view(environ, start_response)

    return below


@pytest.mark.parametrize(
    "path",
    [
        "/big?n=1025",  # a finished body over the limit
        "/stream?chunks=2&size=1025",  # a streamed body whose first chunk is over it
        "/declared",  # a declared Content-Length over it
    ],
)
def test_a_response_over_the_limit_is_a_500_with_a_ticket(path):
    def view(environ, start_response):
        if environ["PATH_INFO"] == "/declared":
            start_response("200 OK", [("Content-Length", "5000")])
            return iter([b"x" * 10])
        return app(environ, start_response)

    tickets = []
    front = FrontendMiddleware(capturing(view, tickets), max_response_size=1024, **OPTIONS)
    response = call(front, path, headers={"Accept": "application/json"})
    assert response.status == 500 and response.header("Cache-Control") == "no-store"
    request = response.header("X-Request-ID")
    assert json.loads(response.body) == {
        "error": "internal server error", "ticket": "ticket-1", "request_id": request,
    }  # fmt: skip
    assert response.header("X-Ticket-ID") == "ticket-1"
    [(kind, message, ticket_request)] = tickets
    assert kind == "ResponseTooLarge" and "max_response_size=1024" in message
    assert ticket_request == request


def test_the_limit_counts_the_apps_bytes_before_compression():
    front = FrontendMiddleware(app, max_response_size=1024, access_log=None, deadline=None)
    squeezed = call(front, "/big?n=1025", headers={"Accept-Encoding": "gzip"})
    assert squeezed.status == 500 and squeezed.header("Content-Encoding") is None
    fits = call(front, "/big?n=1024", headers={"Accept-Encoding": "gzip"})
    assert fits.status == 200 and gzip.decompress(fits.body) == b"x" * 1024


def test_over_the_limit_without_tickets_the_500_page_is_html_and_the_error_logged(caplog):
    caplog.set_level(logging.ERROR, "scalekit.frontend")
    front = FrontendMiddleware(app, max_response_size=1024, **OPTIONS)
    response = call(front, "/big?n=2000")
    assert response.status == 500 and b"Internal error" in response.body
    assert response.header("Content-Type") == "text/html; charset=utf-8"
    assert "ResponseTooLarge" in caplog.text and response.header("X-Request-ID") in caplog.text


def test_a_stream_over_the_limit_after_its_headers_is_aborted(caplog):
    caplog.set_level(logging.ERROR, "scalekit.frontend")
    front = FrontendMiddleware(app, max_response_size=1024, **OPTIONS)
    environ = make_environ("/stream?chunks=5&size=400")
    server, client = socket.socketpair()
    environ["gunicorn.socket"] = server
    try:
        body = front(environ, lambda status, headers, exc_info=None: None)
        assert list(body) == [b"y" * 400, b"y" * 400]
        body.close()
        assert client.recv(10) == b""  # the connection was shut down
    finally:
        server.close()
        client.close()
    assert "aborted after 800 bytes" in caplog.text
    assert environ["scalekit.request_id"] in caplog.text
    # a server that gives no socket sees an error, and drops the connection itself
    body = front(make_environ("/stream?chunks=5&size=400"), lambda *args: None)
    with pytest.raises(ResponseAborted):
        list(body)
    body.close()


def test_a_real_client_sees_the_truncated_stream(served):
    response = get(served, f"/stream?chunks=8&size={LIMIT // 4}")
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as truncated:
        response.read()
    assert len(truncated.value.partial) <= LIMIT
    assert get(served, "/hello").read() == b"hello"  # and the worker keeps serving


def test_a_finished_body_over_the_limit_under_gunicorn(served):
    response = get(served, f"/big?n={LIMIT + 1}")
    assert response.status == 500 and b"Internal error" in response.read()


# -- an escaping exception -------------------------------------------------------------------
def test_an_escaping_exception_is_a_500_page_without_details(caplog):
    caplog.set_level(logging.INFO)
    response = call(FrontendMiddleware(app, access_log="json", compress=False), "/boom")
    assert response.status == 500 and context.request_id.get() is None
    [record] = access_records(caplog)
    assert record["status"] == 500 and record["level"] == "ERROR"
    assert b"boom" not in response.body and b"Traceback" not in response.body
    assert response.header("X-Request-ID").encode() in response.body
    assert "RuntimeError" in caplog.text and "Traceback" in caplog.text
    assert "hunter2" not in caplog.text  # scrubbed


def test_an_escaping_exception_gets_a_ticket_through_the_hook():
    tickets = []
    response = call(FrontendMiddleware(capturing(app, tickets), **OPTIONS), "/boom")
    assert response.status == 500 and response.header("X-Ticket-ID") == "ticket-1"
    assert tickets[0][0] == "RuntimeError"


def test_a_stream_failing_before_its_first_chunk_is_a_500_and_after_it_aborted(caplog):
    def view(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/late":
            yield b"started"
        raise ValueError("token=abc123")

    front = FrontendMiddleware(view, **OPTIONS)
    assert call(front, "/early").status == 500
    with pytest.raises(ResponseAborted):
        call(front, "/late")
    assert "abc123" not in caplog.text


def test_served_facts_and_headers(served):
    response = get(served, "/environ", {"X-Request-ID": "through-gunicorn"})
    document = json.loads(response.read())
    assert response.getheader("X-Request-ID") == document["request_id"] == "through-gunicorn"
    assert response.getheader("X-Node") == document["node"] == "node-test"
    assert document["version"] == "v-test" and document["peer"] == "127.0.0.1"
    assert get(served, "/boom").status == 500


# -- one view, options -------------------------------------------------------------------------
def test_with_frontend_on_one_view():
    @with_frontend(node="one-view", node_header=True, **OPTIONS)
    def view(environ, start_response):
        """A view."""
        return app(environ, start_response)

    response = call(view, "/environ")
    assert response.header("X-Node") == "one-view" and facts(response)["request_id"]
    assert view.__name__ == "view" and view.__doc__ == "A view."


@pytest.mark.parametrize(
    "options",
    [
        {"access_log": "xml"},
        {"max_response_size": 0},
        {"max_response_size": "32M"},
        {"max_response_size": True},
        {"compress": False, "min_size": 100},
        {"node": "web\r\nX-Evil: 1"},
        {"node": "nœud", "node_header": True},
        {"trusted_proxies": ["not-an-address"]},
        {"no_such_option": 1},
    ],
)
def test_bad_options_are_a_config_error(options):
    with pytest.raises(ConfigError):
        FrontendMiddleware(app, **options)
    with pytest.raises(ConfigError):
        with_frontend(**options)(app)


@pytest.mark.parametrize("limited", [False, True])
def test_a_path_with_a_line_break_cannot_forge_a_log_line(caplog, limited):
    """A server decodes %0A into PATH_INFO: the error and abort lines escape it."""

    def failing(environ, start_response):
        raise RuntimeError("boom")

    def streaming(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"x" * 10
        yield b"x" * 100

    path = "/a\nERROR scalekit.frontend: forged\r\x00"
    frontend = FrontendMiddleware(streaming if limited else failing, max_response_size=50,
                                  access_log=None, deadline=None)  # fmt: skip
    raised = pytest.raises(ResponseAborted) if limited else contextlib.nullcontext()
    with caplog.at_level(logging.ERROR, logger="scalekit.frontend"), raised:
        call(frontend, path)
    [record] = [r for r in caplog.records if r.name == "scalekit.frontend"]
    first, *rest = record.getMessage().splitlines()  # the rest: a scrubbed traceback
    assert first.startswith("GET /a\\x0aERROR scalekit.frontend: forged\\x0d\\x00")
    assert not any("forged" in line for line in rest)
