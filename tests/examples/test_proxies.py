"""The example balancer configs (haproxy.cfg, haproxy-sticky.cfg, nginx-proxy.conf,
apache-proxy.conf) through the real haproxy, nginx and Apache in front of real gunicorn
nodes run with examples/gunicorn.conf.py: which requests are replayed on another node, and
what the app learns from X-Forwarded-* (behind haproxy's TLS termination, and over plain
http from a client that claims https).

The nodes serve :func:`app` below; each execution of a request appends a line to a file
shared by the nodes, so a test counts how often a request ran, and where.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from examples.cluster import haproxy_config
from scalekit.sessions import SessionMiddleware
from tests.examples.test_configs import ProxyApache, make_certificate, read
from tests.servers import NginxServer, find_binary, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
NODES = ("node1", "node2")
SERVER_TIMEOUT = 1  # the balancers' server (read) timeout in these tests, seconds
PLAIN = ["haproxy.cfg", "haproxy-sticky.cfg", "nginx-proxy.conf", "apache-proxy.conf"]


# -- the app on every node ---------------------------------------------------------------
def runs(log_path: str, request_id: str) -> list[str]:
    """The nodes that ran request ``request_id`` so far, in order."""
    with open(log_path) as log:
        return [line.split()[1] for line in log if line.split()[0] == request_id]


def _view(environ: dict, start_response) -> list[bytes]:
    """/slow and /crash misbehave the first time a request id runs (a replay answers);
    /session saves a session and shows the scheme and X-Forwarded-For it was given."""
    path, query = environ["PATH_INFO"], parse_qs(environ.get("QUERY_STRING", ""))
    request_id, node = query.get("id", ["-"])[0], os.environ["SCALEKIT_NODE"]
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))  # or a crash is a reset
    first = not runs(os.environ["PROXY_TEST_LOG"], request_id)
    with open(os.environ["PROXY_TEST_LOG"], "a") as log:
        log.write(f"{request_id} {node}\n")
    if path == "/slow" and first:
        time.sleep(SERVER_TIMEOUT * 3)
    elif path == "/crash" and first:
        os.kill(os.getpid(), signal.SIGKILL)  # this worker dies before answering
    elif path == "/session":
        environ["scalekit.session"]["seen"] = True
    body = f"{node} {environ['wsgi.url_scheme']} {environ.get('HTTP_X_FORWARDED_FOR')}"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]


def _headers(environ: dict, start_response) -> list[bytes]:
    """/headers: the forwarding headers and the request id the balancer sent, as JSON."""
    names = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
             "HTTP_FORWARDED", "HTTP_X_REQUEST_ID", "HTTP_HOST")  # fmt: skip
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({name: environ.get(name) for name in names}).encode()]


def _healthz(environ: dict, start_response) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def app(environ: dict, start_response) -> list[bytes]:
    """The WSGI app gunicorn serves on each node (``tests.examples.test_proxies:app``)."""
    if environ["PATH_INFO"] == "/healthz":  # no log line: haproxy checks every second
        return _healthz(environ, start_response)
    if environ["PATH_INFO"] == "/headers":
        return _headers(environ, start_response)
    return _sessions()(environ, start_response)


@functools.cache
def _sessions() -> SessionMiddleware:
    """:func:`_view` with file sessions (secure="auto", the default), made on first use."""
    folder = os.environ["PROXY_TEST_SESSIONS"]
    return SessionMiddleware(_view, f"file://{folder}", secret="proxy-test-" + "s" * 32)


# -- fixtures ----------------------------------------------------------------------------
@contextlib.contextmanager
def process(command: list[str], env: dict[str, str], log: str) -> Iterator[None]:
    with open(log, "ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_answering(connect, log: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError):
            connection = connect()
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        if time.monotonic() > deadline:
            with open(log) as output:
                pytest.fail(output.read()[-3000:], pytrace=False)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("proxies")


@pytest.fixture(scope="module")
def nodes(folder) -> Iterator[dict[str, int]]:
    """Two gunicorn nodes with examples/gunicorn.conf.py: name -> port."""
    (folder / "runs.log").touch()
    (folder / "sessions").mkdir()
    ports = {name: free_port() for name in NODES}
    with contextlib.ExitStack() as stack:
        for name, port in ports.items():
            env = dict(os.environ, SCALEKIT_NODE=name, SCALEKIT_BIND=f"127.0.0.1:{port}",
                       SCALEKIT_WORKERS="2", SCALEKIT_ACCESSLOG="",
                       PROXY_TEST_LOG=str(folder / "runs.log"),
                       PROXY_TEST_SESSIONS=str(folder / "sessions"))  # fmt: skip
            command = [GUNICORN, "-c", "examples/gunicorn.conf.py", "--pythonpath", ROOT,
                       "tests.examples.test_proxies:app"]  # fmt: skip
            log = str(folder / f"{name}.log")
            stack.enter_context(process(command, env, log))
            wait_answering(lambda port=port: http.client.HTTPConnection("127.0.0.1", port), log)
        yield ports


def run_haproxy(folder, name: str, config: str) -> contextlib.AbstractContextManager[None]:
    path = folder / f"{name}.cfg"
    path.write_text(config.replace("timeout server 30s", f"timeout server {SERVER_TIMEOUT}s"))
    return process([find_binary("haproxy"), "-db", "-f", str(path)], dict(os.environ),
                    str(folder / f"{name}.log"))  # fmt: skip


def _web_server(name: str, nodes: dict[str, int]) -> NginxServer | ProxyApache:
    """nginx or Apache with example config ``name``, its upstreams made the nodes."""
    site = "".join(line for line in read(name).splitlines(True) if "10.0.0.13" not in line)
    for number, port in zip((11, 12), nodes.values(), strict=True):  # two servers, not three
        site = _replace(site, f"10.0.0.{number}:8000", f"127.0.0.1:{port}")
    if name.startswith("nginx"):
        site = _replace(site, "listen 80;", "listen 127.0.0.1:{port};")
        # The failures made on purpose here would take both nodes out for 10 s.
        site = site.replace("max_fails=2", "max_fails=0")
        return NginxServer(_replace(site, "proxy_read_timeout 30s", "proxy_read_timeout 1s"))
    return ProxyApache(_replace(site, "timeout=30", f"timeout={SERVER_TIMEOUT}"))


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"the example no longer has {old!r}"
    return text.replace(old, new)


@pytest.fixture(scope="module", params=PLAIN)
def plain(request, folder, nodes) -> Iterator[int]:
    """The balancer with example config ``request.param`` on plain http in front of the
    nodes (haproxy as `make cluster` runs it): its port."""
    name = request.param
    if not name.startswith("haproxy"):
        with _web_server(name, nodes).running() as server:
            yield server.port
        return
    port = free_port()
    with run_haproxy(folder, name, haproxy_config(name, port=port, nodes=nodes)):
        wait_answering(lambda: http.client.HTTPConnection("127.0.0.1", port),
                        str(folder / f"{name}.log"))  # fmt: skip
        yield port


@pytest.fixture(scope="module")
def tls(folder, nodes) -> Iterator[tuple[int, int, ssl.SSLContext]]:
    """haproxy.cfg terminating TLS with a certificate made here: (http port, https port, a
    client context trusting the certificate)."""
    port, tls_port = free_port(), free_port()
    certificate, pem = make_certificate(str(folder))
    config = haproxy_config(port=port, nodes=nodes, tls=(tls_port, pem))
    context = ssl.create_default_context(cafile=certificate)
    with run_haproxy(folder, "tls", config):
        wait_answering(
            lambda: http.client.HTTPSConnection("127.0.0.1", tls_port, context=context),
            str(folder / "tls.log"),
        )
        yield port, tls_port, context


def request(connection: http.client.HTTPConnection, method: str, path: str, **headers: str):
    """``(status, headers, body)`` of one request on a new connection."""
    try:
        connection.request(method, path, b"x=1" if method != "GET" else None, headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        connection.close()


def session_cookie(headers) -> str:
    """The Set-Cookie header of the session (haproxy-sticky.cfg adds its own SERVERID)."""
    (cookie,) = [c for c in headers.get_all("Set-Cookie") if c.startswith("session_id")]
    return cookie


# -- point: haproxy replays only idempotent requests ----------------------------------------
@pytest.mark.parametrize("path", ["/slow", "/crash"])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_request_that_may_have_run_is_not_replayed(folder, plain, method, path):
    request_id = f"{method}-{path[1:]}-{free_port()}"
    connection = http.client.HTTPConnection("127.0.0.1", plain, timeout=30)
    status, _, _ = request(connection, method, f"{path}?id={request_id}")
    assert status in (502, 504)  # a gateway error: the client may send it again
    time.sleep(0.3)
    assert len(runs(folder / "runs.log", request_id)) == 1


@pytest.mark.parametrize("path", ["/slow", "/crash"])
@pytest.mark.parametrize("plain", PLAIN[:3], indirect=True)  # Apache replays nothing sent
def test_a_get_is_replayed_on_another_node(folder, plain, path):
    request_id = f"GET-{path[1:]}-{free_port()}"
    connection = http.client.HTTPConnection("127.0.0.1", plain, timeout=30)
    status, _, body = request(connection, "GET", f"{path}?id={request_id}")
    ran = runs(folder / "runs.log", request_id)
    assert status == 200 and len(ran) == 2 and ran[0] != ran[1]
    assert body.split()[0] == ran[1]


# -- point: the app knows https behind TLS termination, and the client cannot fake it ----
def test_over_https_the_session_cookie_is_secure_and_the_client_address_is_haproxys_view(tls):
    _, tls_port, context = tls
    connection = http.client.HTTPSConnection("127.0.0.1", tls_port, context=context)
    status, headers, body = request(connection, "GET", "/session",
                                    **{"X-Forwarded-For": "203.0.113.9"})  # fmt: skip
    cookie = session_cookie(headers)
    assert status == 200 and "; Secure" in cookie
    assert body.split()[1:] == ["https", "127.0.0.1"]  # the client's own value is dropped


def test_plain_http_is_redirected_to_https(tls):
    port, _, _ = tls
    connection = http.client.HTTPConnection("127.0.0.1", port)
    status, headers, _ = request(connection, "GET", "/session?a=1",
                                 **{"X-Forwarded-Proto": "https"})  # fmt: skip
    assert (status, headers["Location"]) == (301, f"https://127.0.0.1:{port}/session?a=1")
    assert "Set-Cookie" not in headers


def test_over_plain_http_a_client_cannot_claim_https(plain):
    """The balancer replaces X-Forwarded-Proto and -For; gunicorn believes no other scheme
    header, and takes no SCRIPT_NAME from one (the app would then see PATH_INFO "")."""
    connection = http.client.HTTPConnection("127.0.0.1", plain)
    claims = {"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "on",
              "X-Forwarded-Protocol": "ssl", "X-Forwarded-For": "203.0.113.9",
              "SCRIPT_NAME": "/session"}  # fmt: skip
    status, headers, body = request(connection, "GET", "/session", **claims)
    assert status == 200 and "Secure" not in session_cookie(headers)
    assert body.split()[1:] == ["http", "127.0.0.1"]


# -- point: the balancer sends what scalekit.frontend reads, and nothing of the client's -----
def test_the_balancer_replaces_the_client_s_forwarding_headers_and_sends_a_request_id(plain):
    connection = http.client.HTTPConnection("127.0.0.1", plain)
    claims = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
              "X-Forwarded-Host": "evil.example", "Forwarded": "for=203.0.113.9;proto=https",
              "X-Request-ID": "chosen-by-the-client"}  # fmt: skip
    status, _, body = request(connection, "GET", "/headers", **claims)
    seen = json.loads(body)
    assert status == 200 and seen["HTTP_FORWARDED"] is None
    assert (seen["HTTP_X_FORWARDED_FOR"], seen["HTTP_X_FORWARDED_PROTO"]) == ("127.0.0.1", "http")
    assert seen["HTTP_X_FORWARDED_HOST"] == f"127.0.0.1:{plain}"  # the Host the client sent
    assert re.fullmatch(r"[0-9A-Za-z@_-]{20,40}", seen["HTTP_X_REQUEST_ID"])  # the balancer's
