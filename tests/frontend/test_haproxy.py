"""The front end's trusted proxies through the real haproxy (examples/haproxy.cfg, TLS
terminated there) in front of a real gunicorn node: the client's address, scheme and host
are right, Secure cookies come over https, a client's own forwarding headers are ignored,
and the pieces below (sessions, tickets, maintenance, the db pin) see the corrected values
without any proxy setting of their own.

Loopback has a whole /8: haproxy connects to the node from PROXY (``source``), the test's
clients from ALLOWED or OTHER, so each address is told apart. The node runs
examples/gunicorn.conf.py with SCALEKIT_TRUSTED_PROXIES set to an address that never
connects: gunicorn believes no scheme header, whatever the app sees is the front end's.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import re
import ssl
import time
from collections.abc import Iterator

import pytest
from pydal import DAL, Field

from examples.cluster import haproxy_config
from scalekit.db import DBMiddleware, ReplicaSet, current
from scalekit.frontend import FrontendMiddleware
from scalekit.frontend.forwarded import FORWARDING_HEADERS
from scalekit.maintenance import MaintenanceMiddleware, State, open_flag
from scalekit.sessions import SessionMiddleware
from scalekit.tickets import FolderStore, TicketMiddleware
from scalekit.wsgi.environ import PEER_KEY, SESSION_KEY
from tests.examples.test_configs import make_certificate
from tests.examples.test_proxies import GUNICORN, ROOT, process, run_haproxy, wait_answering
from tests.servers import free_port

PROXY, ALLOWED, OTHER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
SPOOFS = {"X-Forwarded-For": ALLOWED, "X-Forwarded-Proto": "https",
          "X-Forwarded-Host": "evil.example", "Forwarded": f"for={ALLOWED};proto=https",
          "X-Real-IP": ALLOWED, "X-Forwarded-Ssl": "on"}  # fmt: skip


# -- the app on the node ----------------------------------------------------------------------
def _seen(environ: dict, start_response) -> list[bytes]:
    """What the app sees: client, scheme, host, server, peer, forwarding headers; /crash
    fails (a ticket), /session saves a session, /write inserts a row (the db pin)."""
    path = environ["PATH_INFO"]
    if path == "/crash":
        raise RuntimeError("a ticket, please")
    if path == "/session":
        environ[SESSION_KEY]["seen"] = True
    if path == "/write":
        current().db.item.insert(name="x")
    keys = ("REMOTE_ADDR", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", PEER_KEY)
    seen = {key: environ.get(key) for key in keys}
    seen["forwarding"] = sorted(FORWARDING_HEADERS & set(environ))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def _define(db: DAL) -> None:
    db.define_table("item", Field("name"))


@functools.cache
def _site():
    """The pieces under the front end, made on first use in each worker."""
    folder = os.environ["FRONTEND_TEST_FOLDER"]
    sessions = SessionMiddleware(_seen, f"file://{folder}/sessions", secret="t" * 32)
    replicas = ReplicaSet("sqlite://primary.sqlite", ["sqlite://replica.sqlite"], folder=folder)
    database = DBMiddleware(_seen, replicas, define=_define)

    def dispatch(environ: dict, start_response):
        view = {"/session": sessions, "/write": database}.get(environ["PATH_INFO"], _seen)
        return view(environ, start_response)

    tickets = TicketMiddleware(dispatch, FolderStore(f"{folder}/errors"), repeat_window=0)
    maintenance = MaintenanceMiddleware(tickets, f"file://{folder}/flag", allow=[ALLOWED],
                                        cache_seconds=0, exempt=("/healthz",))  # fmt: skip
    return FrontendMiddleware(maintenance, trusted_proxies=[PROXY])


def app(environ: dict, start_response):
    """The WSGI app gunicorn serves (``tests.frontend.test_haproxy:app``)."""
    if environ["PATH_INFO"] == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    return _site()(environ, start_response)


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("frontend-haproxy")


@pytest.fixture(scope="module")
def node(folder) -> Iterator[int]:
    port = free_port()
    env = dict(os.environ, SCALEKIT_NODE="node1", SCALEKIT_BIND=f"127.0.0.1:{port}",
               SCALEKIT_WORKERS="2", SCALEKIT_ACCESSLOG="", FRONTEND_TEST_FOLDER=str(folder),
               SCALEKIT_TRUSTED_PROXIES="192.0.2.1")  # fmt: skip
    command = [GUNICORN, "-c", "examples/gunicorn.conf.py", "--pythonpath", ROOT,
               "tests.frontend.test_haproxy:app"]  # fmt: skip
    with process(command, env, str(folder / "node1.log")):
        wait_answering(lambda: http.client.HTTPConnection("127.0.0.1", port),
                       str(folder / "node1.log"))  # fmt: skip
        yield port


@pytest.fixture(scope="module")
def balancers(folder, node) -> Iterator[tuple[int, int, ssl.SSLContext]]:
    """examples/haproxy.cfg twice, connecting from PROXY: plain http only, and with TLS
    (plain http redirected): (plain port, https port, a client context for the latter)."""
    plain, port, tls_port = free_port(), free_port(), free_port()
    certificate, pem = make_certificate(str(folder))
    nodes = {"node1": node}
    configs = {"plain": haproxy_config(port=plain, nodes=nodes),
               "tls": haproxy_config(port=port, nodes=nodes, tls=(tls_port, pem))}  # fmt: skip
    context = ssl.create_default_context(cafile=certificate)
    with contextlib.ExitStack() as stack:
        for name, config in configs.items():
            assert "backend app\n" in config
            stack.enter_context(run_haproxy(folder, name, config.replace(
                "backend app\n", f"backend app\n    source {PROXY}\n")))  # fmt: skip
        wait_answering(lambda: http.client.HTTPConnection("127.0.0.1", plain),
                       str(folder / "plain.log"))  # fmt: skip
        wait_answering(lambda: https(tls_port, context), str(folder / "tls.log"))
        yield plain, tls_port, context


def https(port: int, context: ssl.SSLContext, source: str = ALLOWED):
    return http.client.HTTPSConnection("127.0.0.1", port, context=context,
                                       source_address=(source, 0))  # fmt: skip


def plain_http(port: int, source: str = ALLOWED):
    return http.client.HTTPConnection("127.0.0.1", port, source_address=(source, 0))


def call(connection, path: str, method: str = "GET", **headers: str):
    """``(status, headers, body as JSON or text)`` of one request on a new connection."""
    try:
        connection.request(method, path, b"" if method == "POST" else None, headers)
        response = connection.getresponse()
        body = response.read().decode()
        with contextlib.suppress(ValueError):
            body = json.loads(body)
        return response.status, response.headers, body
    finally:
        connection.close()


def cookie(headers, prefix: str) -> str:
    """The one Set-Cookie whose name starts with ``prefix``."""
    (found,) = [c for c in headers.get_all("Set-Cookie") or () if c.startswith(prefix)]
    return found


# -- the client, the scheme, the host ----------------------------------------------------------
def test_behind_tls_termination_the_app_sees_the_client_https_and_the_host(balancers):
    _, tls_port, context = balancers
    status, _, seen = call(https(tls_port, context), "/seen")
    assert status == 200
    assert seen == {"REMOTE_ADDR": ALLOWED, "wsgi.url_scheme": "https",
                    "HTTP_HOST": f"127.0.0.1:{tls_port}", "SERVER_NAME": "127.0.0.1",
                    "SERVER_PORT": str(tls_port), PEER_KEY: PROXY,
                    "forwarding": ["HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST",
                                   "HTTP_X_FORWARDED_PROTO"]}  # fmt: skip


def test_a_client_s_spoofed_forwarding_headers_are_ignored(balancers):
    plain, tls_port, context = balancers
    status, _, seen = call(plain_http(plain, OTHER), "/seen", **SPOOFS)
    assert status == 200
    assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"]) == (OTHER, "http")
    assert seen["HTTP_HOST"] == f"127.0.0.1:{plain}" and seen["SERVER_PORT"] == str(plain)
    assert "HTTP_FORWARDED" not in seen["forwarding"]
    _, _, seen = call(https(tls_port, context, OTHER), "/seen", **SPOOFS)
    assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"]) == (OTHER, "https")


def test_haproxy_s_request_id_is_the_app_s_and_in_haproxy_s_log_line(balancers, folder):
    _, tls_port, context = balancers
    _, headers, _ = call(https(tls_port, context), "/seen", **{"X-Request-ID": "mine-123"})
    request_id = headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", request_id)  # not mine
    deadline = time.monotonic() + 5  # haproxy writes its line once the response is sent
    while request_id not in (folder / "tls.log").read_text():
        assert time.monotonic() < deadline, "haproxy did not log the request id"
        time.sleep(0.05)


def test_a_client_reaching_the_node_directly_is_not_believed_either(node):
    status, _, seen = call(plain_http(node, OTHER), "/seen", **SPOOFS)
    assert status == 200 and seen["forwarding"] == []
    assert seen["REMOTE_ADDR"] == seen[PEER_KEY] == OTHER and seen["wsgi.url_scheme"] == "http"


# -- the pieces see the corrected values --------------------------------------------------------
def test_the_session_cookie_is_secure_over_https_only(balancers):
    plain, tls_port, context = balancers
    _, headers, _ = call(https(tls_port, context), "/session")
    assert "; Secure" in cookie(headers, "session_id")
    _, headers, _ = call(plain_http(plain), "/session", **{"X-Forwarded-Proto": "https"})
    assert "Secure" not in cookie(headers, "session_id")


def test_the_db_pin_cookie_is_secure_over_https_only(balancers):
    plain, tls_port, context = balancers
    status, headers, _ = call(https(tls_port, context), "/write", method="POST")
    assert status == 200 and "; Secure" in cookie(headers, "scalekit_db_pin")
    _, headers, _ = call(plain_http(plain), "/write", method="POST", **SPOOFS)
    assert "Secure" not in cookie(headers, "scalekit_db_pin")


def test_a_ticket_names_the_client_and_the_proxy(balancers, folder):
    _, tls_port, context = balancers
    status, headers, _ = call(https(tls_port, context, OTHER), "/crash", **SPOOFS)
    ticket = FolderStore(str(folder / "errors")).load(headers["X-Ticket-ID"])
    assert status == 500
    assert (ticket["request"]["client"], ticket["request"]["peer"]) == (OTHER, PROXY)


def test_maintenance_lets_the_allowed_address_through_not_a_spoofed_one(balancers, folder):
    plain, _, _ = balancers
    flag = open_flag(f"file://{folder}/flag")
    flag.write(State("down"))
    try:
        assert call(plain_http(plain, ALLOWED), "/seen")[0] == 200
        assert call(plain_http(plain, OTHER), "/seen", **SPOOFS)[0] == 503
    finally:
        flag.clear()
    assert call(plain_http(plain, OTHER), "/seen")[0] == 200
