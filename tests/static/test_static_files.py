"""StaticFiles over WSGI: negotiation, conditional and range requests, HEAD, safety."""

from __future__ import annotations

import gzip
import itertools
import os
import pathlib
import shutil

import brotli
import pytest

from scalekit.static import Options, StaticFiles, precompress
from scalekit.wsgi.conditional import http_date
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


@pytest.mark.parametrize(
    ("byte_range", "status", "content_range"),
    [
        ("bytes=" + "9" * 5000 + "-", 416, "bytes */40000"),
        ("bytes=0-" + "9" * 5000, 206, "bytes 0-39999/40000"),
        ("bytes=-" + "9" * 5000, 206, "bytes 0-39999/40000"),
        ("bytes=" + "9" * 5000 + "-" + "9" * 5001, 416, "bytes */40000"),
    ],
)
def test_a_range_with_thousands_of_digits_is_answered_not_a_500(client, byte_range, status,
                                                                content_range):  # fmt: skip
    response = client.get("/js/app.js", headers={"Range": byte_range})
    assert (response.status, response.header("Content-Range")) == (status, content_range)


def test_a_real_folder_named_like_a_version_segment_is_served_from_itself(served):
    client = Client(StaticFiles(None, served))
    write(f"{served}/_2024/js/app.js", b"the real _2024 folder")
    real = client.get("/_2024/js/app.js")
    assert real.body == b"the real _2024 folder"
    assert real.header("Cache-Control") == "public, max-age=3600"
    stripped = client.get("/_2024/css/site.css")  # not in the folder: a version segment
    assert stripped.body == text(2, 9_000)
    assert stripped.header("Cache-Control") == "public, max-age=31536000, immutable"


def test_dated_names_are_not_immutable_content_hashes_are(served):
    client = Client(StaticFiles(None, served))
    for name in ("export-20240101.csv", "backup.2024123199.sql", "app.3f2a9c1b.js",
                 "main-5d41402a.css", "chunk.deadbeef.js"):  # fmt: skip
        write(f"{served}/{name}", b"data")
    for name in ("export-20240101.csv", "backup.2024123199.sql"):
        assert client.get(f"/{name}").header("Cache-Control") == "public, max-age=3600"
    for name in ("app.3f2a9c1b.js", "main-5d41402a.css", "chunk.deadbeef.js"):
        assert "immutable" in client.get(f"/{name}").header("Cache-Control")


def test_a_direct_request_for_a_variant_is_served_as_what_it_is(served):
    client = Client(StaticFiles(None, served))
    write(f"{served}/orphan.js.gz", gzip.compress(b"orphan"))
    for path in ("/js/app.js.gz", "/orphan.js.gz", "/release.tar.gz"):
        response = client.get(path, headers={"Accept-Encoding": "gzip"})
        assert response.status == 200 and response.header("Content-Encoding") is None
        assert response.header("Content-Type") == "application/gzip"
        assert response.body == pathlib.Path(served + path).read_bytes()
    response = client.get("/js/app.js.br", headers={"Accept-Encoding": "br"})
    assert response.header("Content-Encoding") is None
    assert response.header("Content-Type") == "application/x-brotli"


def test_etags_come_from_the_content_so_every_server_gives_the_same(tree, tmp_path):
    """Two servers, each with its own copy of the tree (other mtimes, other inodes) and
    zip-static run on each as a deploy does: the same ETag for every representation."""
    servers = []
    for number, mtime in ((1, MTIME), (2, MTIME + 3600)):
        copy = shutil.copytree(tree, tmp_path / f"server{number}", copy_function=shutil.copy)
        for folder, _, names in os.walk(copy):
            for name in names:
                os.utime(os.path.join(folder, name), (mtime, mtime))
        precompress([str(copy)], Options(brotli=True, quality=5), jobs=1)
        servers.append(Client(StaticFiles(None, copy)))
    for accept in ("identity", "gzip", "br"):
        one, two = (s.get("/js/app.js", headers={"Accept-Encoding": accept}) for s in servers)
        assert one.header("ETag") == two.header("ETag")
        again = {"Accept-Encoding": accept, "If-None-Match": one.header("ETag")}
        assert servers[1].get("/js/app.js", headers=again).status == 304
        ranged = {"Range": "bytes=0-1", "If-Range": one.header("ETag")}
        partial = servers[1].get("/js/app.js", headers=ranged).status
        assert partial == (206 if accept == "identity" else 200)
    before = servers[0].get("/js/app.js").header("ETag")
    write(str(tmp_path / "server1/js/app.js"), b"changed, zip-static not run yet")
    after = servers[0].get("/js/app.js")
    assert after.body == b"changed, zip-static not run yet" and after.header("ETag") != before
