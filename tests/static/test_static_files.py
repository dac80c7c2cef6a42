"""StaticFiles over WSGI: negotiation, conditional and range requests, HEAD, safety."""

from __future__ import annotations

import gzip
import itertools
import os
import pathlib

import brotli
import pytest

from scalekit.static import Options, StaticFiles, precompress
from scalekit.static.http import http_date
from tests.static.conftest import make_tree, text, write
from tests.wsgi import Client

MTIME = 1_700_000_000
SOURCE = text(1, 40_000)  # js/app.js in the tree
DECODE = {None: lambda body: body, "gzip": gzip.decompress, "br": brotli.decompress}


@pytest.fixture
def served(tree) -> str:
    """The tree with .gz and .br variants, for one test to change."""
    precompress([tree], Options(brotli=True, quality=5), jobs=1)
    return tree


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Client:
    """A client of a served tree that no test changes."""
    tree = make_tree(str(tmp_path_factory.mktemp("served") / "static"))
    precompress([tree], Options(brotli=True, quality=5), jobs=1)
    return Client(StaticFiles(None, tree))


ACCEPTS = {"none": None, "gzip": "gzip", "both": "gzip, deflate, br", "refuse": "br;q=0, gzip;q=0"}
CONDITIONS = ["none", "etag-match", "etag-other", "since-later", "since-earlier"]
RANGES = [None, "bytes=0-9", "bytes=-5", "bytes=40000-"]


@pytest.mark.parametrize(
    ("accept", "condition", "byte_range", "method"),
    list(itertools.product(ACCEPTS, CONDITIONS, RANGES, ["GET", "HEAD"])),
)
def test_http_matrix(client, accept, condition, byte_range, method):
    headers = {"Range": byte_range} if byte_range else {}
    if ACCEPTS[accept]:
        headers["Accept-Encoding"] = ACCEPTS[accept]
    plain = client.get("/js/app.js", headers=headers)  # the representation, unconditionally
    if condition == "etag-match":
        headers["If-None-Match"] = f'"other", W/{plain.header("ETag")}'
    elif condition == "etag-other":  # an ETag that does not match outweighs the date
        headers["If-None-Match"] = '"other"'
        headers["If-Modified-Since"] = http_date(MTIME + 10)
    elif condition == "since-later":
        headers["If-Modified-Since"] = http_date(MTIME + 10)
    elif condition == "since-earlier":
        headers["If-Modified-Since"] = http_date(MTIME - 10)
    response = client.request("/js/app.js", method=method, headers=headers)

    encoding = None if byte_range else {"both": "br", "gzip": "gzip"}.get(accept)
    assert response.header("Vary") == "Accept-Encoding"  # also on 304 and 416
    assert response.header("Last-Modified") == http_date(MTIME)
    assert response.header("Cache-Control") == "public, max-age=3600"
    assert response.header("ETag") == plain.header("ETag")
    assert response.header("ETag").endswith(f'-{encoding}"' if encoding else '"')
    if condition in ("etag-match", "since-later"):
        assert (response.status, response.body) == (304, b"")
        assert response.header("Content-Encoding") is None
        return
    assert response.header("Content-Encoding") == encoding
    if byte_range == "bytes=40000-":
        assert response.status == 416
        assert response.header("Content-Range") == "bytes */40000"
        return
    if byte_range:
        first, last = (0, 9) if byte_range == "bytes=0-9" else (39_995, 39_999)
        expected, status = SOURCE[first : last + 1], 206
        assert response.header("Content-Range") == f"bytes {first}-{last}/40000"
    else:
        expected, status = SOURCE, 200
    assert response.status == status
    if method == "HEAD":
        assert response.body == b""
        assert response.header("Content-Length") == plain.header("Content-Length")
    else:
        assert DECODE[encoding](response.body) == expected
        assert response.header("Content-Length") == str(len(response.body))
    assert response.header("Accept-Ranges") == (None if encoding else "bytes")


def test_each_encoding_has_its_own_etag_and_content_type(client):
    etags = {
        client.get("/js/app.js", headers={"Accept-Encoding": accept}).header("ETag")
        for accept in ("identity", "gzip", "br")
    }
    assert len(etags) == 3
    css = client.get("/css/site.css", headers={"Accept-Encoding": "gzip"})
    assert css.header("Content-Type") == "text/css; charset=utf-8"
    png = client.get("/img/photo.png", headers={"Accept-Encoding": "gzip"})
    assert png.header("Content-Type") == "image/png" and png.header("Vary") is None


def test_if_range_applies_the_range_only_to_the_same_file(client):
    etag = client.get("/js/app.js").header("ETag")
    for validator, status in ((etag, 206), (http_date(MTIME), 206), ('"old"', 200)):
        response = client.get("/js/app.js", headers={"Range": "bytes=0-1", "If-Range": validator})
        assert response.status == status


def test_a_variant_older_than_its_source_is_never_sent(served):
    client = Client(StaticFiles(None, served))
    write(f"{served}/js/app.js", b"new content " * 100, mtime=MTIME + 60)
    for accept in ("gzip", "br", "br, gzip"):
        response = client.get("/js/app.js", headers={"Accept-Encoding": accept})
        assert response.header("Content-Encoding") is None
        assert response.body == b"new content " * 100
    assert response.header("Vary") == "Accept-Encoding"
    os.utime(f"{served}/js/app.js.gz", (MTIME + 60, MTIME + 60))  # gz fresh again (as a test)
    response = client.get("/js/app.js", headers={"Accept-Encoding": "br, gzip"})
    assert response.header("Content-Encoding") == "gzip"


@pytest.mark.parametrize(
    "path",
    [
        "/../static/js/app.js",
        "/js/../../static/js/app.js",
        "/js/%2e%2e/js/app.js",
        "/js/%2E%2E/%2e%2e/etc/passwd",
        "/js\\..\\js\\app.js",
        "/js/app.js\x00.png",
        "//etc/passwd",
        "/js//app.js",
        "/.zip-static.json",
        "/js/",
        "/missing.js",
        "/outside/secret.txt",  # a symlink pointing out of the root
        "/linked.js",  # a symlink to a file outside
        "/js/app\xff.js",  # not UTF-8
    ],
)
def test_paths_that_leave_the_root_are_refused(served, tmp_path, path):
    client = Client(StaticFiles(None, served))
    write(f"{tmp_path}/secret/secret.txt", b"secret")
    os.symlink(f"{tmp_path}/secret", f"{served}/outside")
    os.symlink(f"{tmp_path}/secret/secret.txt", f"{served}/linked.js")
    response = client.get(path)
    assert response.status == 404 and b"secret" not in response.body


def test_a_symlink_inside_the_root_is_served(served):
    client = Client(StaticFiles(None, served))
    os.symlink(f"{served}/js/app.js", f"{served}/alias.js")
    assert client.get("/alias.js").body == SOURCE


def test_versioned_and_hashed_urls_are_immutable(served):
    client = Client(StaticFiles(None, served))
    write(f"{served}/js/app.3f2a9c1b.js", SOURCE)
    for path in ("/_1.2.3/js/app.js", "/js/app.3f2a9c1b.js"):
        response = client.get(path)
        assert response.body == SOURCE
        assert response.header("Cache-Control") == "public, max-age=31536000, immutable"
    custom = Client(StaticFiles(None, served, max_age=60, immutable=None))
    assert custom.get("/js/app.3f2a9c1b.js").header("Cache-Control") == "public, max-age=60"


def test_middleware_serves_its_prefix_and_passes_the_rest(served):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app:" + environ["PATH_INFO"].encode()]

    client = Client(StaticFiles(app, served, prefix="/shop/static"))
    assert client.get("/shop/static/js/app.js").body == SOURCE
    assert client.get("/shop/static/nothing.js").status == 404
    assert client.get("/shop/default/index").body == b"app:/shop/default/index"
    assert client.get("/shop/staticfile").body == b"app:/shop/staticfile"
    assert Client(StaticFiles(root=served, prefix="/s/")).get("/other").status == 404


def test_other_methods_are_refused(client):
    response = client.request("/js/app.js", method="POST")
    assert response.status == 405 and response.header("Allow") == "GET, HEAD"


def test_encodings_can_be_limited(served):
    client = Client(StaticFiles(None, served, encodings=["gzip"]))
    response = client.get("/js/app.js", headers={"Accept-Encoding": "br, gzip"})
    assert response.header("Content-Encoding") == "gzip"


def test_uses_wsgi_file_wrapper_for_whole_files(served):
    wrapped = []

    def file_wrapper(handle, block_size):
        wrapped.append(handle.name)
        return iter(lambda: handle.read(block_size), b"")

    app = StaticFiles(None, served)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/js/app.js",
        "HTTP_ACCEPT_ENCODING": "gzip",
        "wsgi.file_wrapper": file_wrapper,
    }
    body = b"".join(app(environ, lambda status, headers: None))
    assert gzip.decompress(body) == SOURCE and wrapped == [f"{served}/js/app.js.gz"]


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(NotADirectoryError, match="nowhere"):
        StaticFiles(None, str(tmp_path / "nowhere"))


def test_the_former_order_root_then_app_still_works_and_warns(served):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    with pytest.warns(DeprecationWarning, match=r"StaticFiles\(app, root\)"):
        client = Client(StaticFiles(served, app, prefix="/static/"))
    assert client.get("/static/js/app.js").body == SOURCE
    assert client.get("/other").body == b"app"
    with pytest.warns(DeprecationWarning):
        alone = Client(StaticFiles(pathlib.Path(served)))
    assert alone.get("/js/app.js").body == SOURCE
