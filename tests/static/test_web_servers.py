"""examples/nginx.conf and examples/apache.conf: checked by the servers themselves, then
serving a zip-static tree on loopback to real HTTP requests."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import brotli
import pytest

from scalekit.static import Options, precompress
from tests.servers import ApacheServer, NginxServer, Server, ServerStartError, find_binary
from tests.static.conftest import make_tree, text

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "examples")
DEPLOY_PATH = "/srv/app/applications/shop/static"
SOURCE = text(1, 40_000)


def site(name: str, static: str) -> str:
    """The example config with the test's folder and port in place of the deploy's."""
    with open(os.path.join(EXAMPLES, name)) as file:
        config = file.read()
    assert DEPLOY_PATH in config
    return config.replace(DEPLOY_PATH, static).replace("listen 80;", "listen 127.0.0.1:{port};")


@contextlib.contextmanager
def serving(server_class: type[Server], config: str) -> Iterator[Server]:
    server = server_class(config)
    try:
        with server.running():
            yield server
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def static() -> Iterator[str]:
    """A precompressed tree the servers' workers (``nobody`` when we are root) can read:
    in its own world-readable temp folder, not pytest's private one."""
    base = tempfile.mkdtemp(prefix="scalekit-static-")
    os.chmod(base, 0o755)
    try:
        root = make_tree(os.path.join(base, "static"))
        precompress([root], Options(brotli=True, quality=5), jobs=1)
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)


def get(server: Server, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def check_serving(server: Server) -> None:
    """The same expectations for both servers: best variant, right type, Vary, hidden
    files refused, versioned URLs cached for a year."""
    status, headers, body = get(server, "/shop/static/js/app.js", **{"Accept-Encoding": "gzip, br"})
    assert (status, headers["content-encoding"]) == (200, "br")
    assert brotli.decompress(body) == SOURCE
    assert "javascript" in headers["content-type"] and "Accept-Encoding" in headers["vary"]
    status, headers, body = get(
        server, "/shop/static/_1.2.3/js/app.js", **{"Accept-Encoding": "gzip"}
    )
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert gzip.decompress(body) == SOURCE
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    status, headers, body = get(server, "/shop/static/js/app.js")
    assert (status, body) == (200, SOURCE) and "content-encoding" not in headers
    status, headers, body = get(server, "/shop/static/css/site.css", **{"Accept-Encoding": "br"})
    assert headers["content-type"].startswith("text/css") and headers["content-encoding"] == "br"
    assert get(server, "/shop/static/.zip-static.json")[0] == 404


def test_nginx_accepts_the_example_and_serves_the_variants(static):
    with serving(NginxServer, site("nginx.conf", static)) as server:
        checked = subprocess.run(
            [find_binary("nginx"), "-t", "-c", server.config_path, "-p", server.workdir],
            check=False, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert checked.returncode == 0 and "test is successful" in checked.stderr
        assert os.path.exists(NginxServer.brotli_module), "brotli_static module missing"
        check_serving(server)


def test_apache_accepts_the_example_and_serves_the_variants(static):
    with serving(ApacheServer, site("apache.conf", static)) as server:
        checked = subprocess.run(
            [find_binary("apache2"), "-t", "-f", server.config_path],
            check=False, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert checked.returncode == 0 and "Syntax OK" in checked.stderr
        check_serving(server)
