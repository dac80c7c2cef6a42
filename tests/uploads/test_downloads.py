"""Downloads in-process: ranges, conditional requests, safe types and file names, bad
names, who may download (authorize, pydal records, signed links), the decorator.
Under gunicorn, on every backend and with a store failing half-way: test_downloads_served."""

from __future__ import annotations

import base64
import gc
import logging
import os
import shutil
import time
import warnings
from wsgiref.util import FileWrapper

import pytest
from pydal import DAL, Field

from scalekit.core.errors import ConfigError
from scalekit.core.signing import Signer
from scalekit.uploads import open_store
from scalekit.uploads.downloads import Downloads, download
from scalekit.uploads.signed import PURPOSE
from scalekit.wsgi.conditional import http_date
from tests.wsgi import Client

SECRET = "a-secret-for-the-download-tests-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # 10248 bytes
SCRIPTED_HTML = (
    b"<!doctype html><html><body><p id=mark>inert</p><script>"
    b"document.getElementById('mark').textContent='HTML-RAN';"
    b"try{parent.document.getElementById('marks').textContent+=' HTML-RAN'}catch(e){}"
    b"</script></body></html>"
)
SCRIPTED_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>'
    b"try{parent.document.getElementById('marks').textContent+=' SVG-RAN'}catch(e){}"
    b"</script></svg>"
)


@pytest.fixture
def store(tmp_path):
    store = open_store(f"file://{tmp_path / 'uploads'}", fsync=False)
    yield store
    store.close()


def request(app, path, *, method="GET", headers=None, query="", file_wrapper=False):
    """The response of ``app`` to one request, its body collected (a wsgi.file_wrapper
    offered when asked: the response says whether the app used it)."""
    used = []

    def with_request(environ, start_response):
        environ["QUERY_STRING"] = query
        if file_wrapper:
            environ["wsgi.file_wrapper"] = lambda file, block: (
                used.append(file) or FileWrapper(file, block)
            )
        return app(environ, start_response)

    response = Client(with_request).request(path, method=method, headers=headers)
    response.wrapped = bool(used)
    return response


def test_a_whole_upload_with_its_headers(store):
    name = store.save(PNG, "photo of me.png", table="person", field="image")
    response = request(Downloads(store), f"/download/{name}")
    assert response.status == 200 and response.body == PNG
    assert response.header("Content-Type") == "image/png"
    assert response.header("Content-Length") == str(len(PNG))
    assert response.header("Content-Disposition") == 'inline; filename="photo_of_me.png"'
    assert response.header("Accept-Ranges") == "bytes"
    assert response.header("Cache-Control") == "private, max-age=3600"
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("Content-Security-Policy").startswith("sandbox")
    assert response.header("Last-Modified") == http_date(store.info(name).modified)
    etag = response.header("ETag")
    assert etag.startswith('"') and etag.endswith(f'-{len(PNG):x}"')
    by_url = Downloads(store.url, cache_control="public, max-age=60")  # a URL opens the store
    again = request(by_url, f"/download/{name}")
    assert again.header("ETag") == etag and again.header("Cache-Control") == "public, max-age=60"


def test_the_whole_file_goes_to_the_servers_file_wrapper_and_a_range_is_streamed(store):
    name = store.save(PNG, "a.png")
    app = Downloads(store)
    whole = request(app, f"/download/{name}", file_wrapper=True)
    assert whole.wrapped and whole.body == PNG
    part = request(app, f"/download/{name}", file_wrapper=True, headers={"Range": "bytes=1-"})
    assert not part.wrapped and part.body == PNG[1:]


@pytest.mark.parametrize(
    ("header", "status", "span"),
    [
        ("bytes=0-99", 206, (0, 99)),
        ("bytes=10000-", 206, (10000, len(PNG) - 1)),
        ("bytes=-48", 206, (len(PNG) - 48, len(PNG) - 1)),
        ("bytes=100-999999", 206, (100, len(PNG) - 1)),
        ("bytes=0-1,5-6", 200, None),  # several ranges: the whole file
        ("items=0-1", 200, None),
        ("bytes=20000-", 416, None),
    ],
)
def test_ranges(store, header, status, span):
    name = store.save(PNG, "a.png")
    response = request(Downloads(store), f"/download/{name}", headers={"Range": header})
    assert response.status == status
    if status == 206:
        first, last = span
        assert response.body == PNG[first : last + 1]
        assert response.header("Content-Range") == f"bytes {first}-{last}/{len(PNG)}"
        assert response.header("Content-Length") == str(last - first + 1)
    elif status == 416:
        assert response.header("Content-Range") == f"bytes */{len(PNG)}"
    else:
        assert response.body == PNG


def test_an_empty_upload(store):
    name = store.save(b"", "empty.txt")
    app = Downloads(store)
    for file_wrapper in (False, True):
        response = request(app, f"/download/{name}", file_wrapper=file_wrapper)
        assert response.status == 200 and response.body == b""
        assert response.header("Content-Length") == "0"
    ranged = request(app, f"/download/{name}", headers={"Range": "bytes=0-"})
    assert ranged.status == 416 and ranged.header("Content-Range") == "bytes */0"


def test_if_range_resumes_only_the_same_upload(store):
    name = store.save(PNG, "a.png")
    app = Downloads(store)
    etag = request(app, f"/download/{name}", method="HEAD").header("ETag")
    modified = http_date(store.info(name).modified)
    for validator, status in ((etag, 206), (modified, 206), ('"other"', 200), ("W/" + etag, 200)):
        headers = {"Range": "bytes=5-", "If-Range": validator}
        assert request(app, f"/download/{name}", headers=headers).status == status


def test_conditional_requests_and_head(store):
    name = store.save(PNG, "a.png")
    app = Downloads(store)
    head = request(app, f"/download/{name}", method="HEAD")
    assert (
        head.status == 200 and head.body == b"" and head.header("Content-Length") == str(len(PNG))
    )
    etag, modified = head.header("ETag"), head.header("Last-Modified")
    for headers in ({"If-None-Match": etag}, {"If-None-Match": f'"x", W/{etag}'},
                    {"If-Modified-Since": modified}):  # fmt: skip
        response = request(app, f"/download/{name}", headers=headers)
        assert response.status == 304 and response.body == b""
        assert response.header("ETag") == etag and response.header("Content-Length") is None
    changed = {"If-None-Match": '"x"', "If-Modified-Since": modified}  # the tag decides
    assert request(app, f"/download/{name}", headers=changed).body == PNG


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("page.html", "text/html"),
        ("page.htm", "text/html"),
        ("page.xhtml", "application/xhtml+xml"),
        ("drawing.svg", "image/svg+xml"),
        ("feed.xml", None),  # text/xml or application/xml, by the system's table
        ("app.js", "text/javascript"),
        ("doc.pdf", "application/pdf"),
        ("run.exe", None),
        ("no extension", "application/octet-stream"),
        ("data.weird123", "application/octet-stream"),
    ],
)
def test_types_a_browser_would_run_are_attachments(store, filename, content_type):
    name = store.save(SCRIPTED_HTML, filename)
    response = request(Downloads(store), f"/download/{name}")
    assert response.status == 200 and response.body == SCRIPTED_HTML
    assert response.header("Content-Disposition").startswith("attachment; filename=")
    if content_type is not None:
        assert response.header("Content-Type") == content_type
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert "sandbox" in response.header("Content-Security-Policy")


@pytest.mark.parametrize(
    "filename", ["a.png", "b.JPG", "c.jpeg", "d.gif", "e.webp", "f.txt", "g.mp4", "h.mp3"]
)
def test_pictures_text_sound_and_video_are_inline(store, filename):
    name = store.save(b"bytes", filename)
    response = request(Downloads(store), f"/download/{name}")
    assert response.header("Content-Disposition").startswith("inline; filename=")


@pytest.mark.parametrize(
    ("filename", "disposition"),
    [
        ("../../x.html", 'attachment; filename="x.html"'),
        ("C:\\a\\b.png", 'inline; filename="b.png"'),
        ("é 🎉.txt", "inline; filename=\"e_.txt\"; filename*=UTF-8''%C3%A9_%F0%9F%8E%89.txt"),
        ('x"\r\nSet-Cookie: a=b.txt', 'inline; filename="x_Set-Cookie:_a=b.txt"'),
        ("invoice\u202egpj.exe", 'attachment; filename="invoice_gpj.exe"'),  # no RLO spoof
    ],
)
def test_the_clients_file_name_comes_back_safe(store, filename, disposition):
    name = store.save(b"x", filename)
    response = request(Downloads(store), f"/download/{name}")
    assert response.header("Content-Disposition") == disposition


def test_a_view_names_the_file_the_client_saves(store):
    name = store.save(b"report", "r.txt")
    app = Downloads(store)

    def view(environ, start_response):
        return app.respond(environ, start_response, name, filename="Rapport 2026 à jour.txt")

    disposition = request(view, "/anything").header("Content-Disposition")
    assert disposition == (
        'inline; filename="Rapport 2026 a jour.txt"; '
        "filename*=UTF-8''Rapport%202026%20%C3%A0%20jour.txt"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/download/",
        "/download/../../etc/passwd",
        "/download/%2e%2e/%2e%2e/etc/passwd",
        "/download/upload.file.0123456789abcdef0123456789abcdef.YS50eHQ.txt",  # absent
        "/download/upload.file.0123456789abcdef0123456789abcdef.YS50eHQ.txt/x",
        "/download/upload.file.0123\x00456789abcdef.YS50eHQ.txt",
        "/download/" + "a" * 300 + ".txt",
        "/download/upload.file.k.YS50eHQ.t xt",
        "/elsewhere/upload.file.0123456789abcdef0123456789abcdef.YS50eHQ.txt",
    ],
)
def test_bad_or_unknown_names_are_404(store, path):
    store.save(b"x", "a.txt")
    response = request(Downloads(store), path)
    assert response.status == 404 and response.body == b"404 Not Found\n"
    assert response.header("X-Content-Type-Options") == "nosniff"


def test_only_get_and_head(store):
    name = store.save(b"x", "a.txt")
    response = request(Downloads(store), f"/download/{name}", method="POST")
    assert response.status == 405 and response.header("Allow") == "GET, HEAD"


def test_a_symlink_planted_in_the_folder_is_not_served(store, tmp_path):
    """Whoever can write the uploads folder plants a link named like an upload."""
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("root:x:0:0")
    name = store.save(b"x", "a.txt")
    path = store.local_path(name)
    os.remove(path)
    os.symlink(secret_file, path)
    for file_wrapper in (False, True):
        response = request(Downloads(store), f"/download/{name}", file_wrapper=file_wrapper)
        assert response.status == 404 and b"root" not in response.body


def open_files_under(folder: str) -> list[str]:
    """The files under ``folder`` this process holds open."""
    paths = (os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd"))
    return [path for path in paths if path.startswith(os.path.realpath(folder) + os.sep)]


def test_a_body_closed_before_its_first_chunk_gives_the_stores_file_back(store):
    """A server closes the body of a client that left before anything was sent."""
    name = store.save(b"x" * 5000, "a.bin")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/download/{name}", "HTTP_RANGE": "bytes=10-"}
    body = Downloads(store)(environ, lambda status, headers, exc_info=None: None)
    assert open_files_under(store.root)  # the store's read is open, nothing sent yet
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        body.close()  # closed, not left to the garbage collector ("unclosed file")
        gc.collect()
    assert open_files_under(store.root) == []
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_store_that_cannot_be_reached_is_a_503(store, caplog):
    name = store.save(b"x", "a.txt")
    shutil.rmtree(store.root)  # the share unmounted
    with caplog.at_level(logging.WARNING, "scalekit.uploads"):
        response = request(Downloads(store), f"/download/{name}")
    assert response.status == 503 and response.header("Retry-After")
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("Content-Security-Policy").startswith("sandbox")
    assert b"upload store cannot be reached" in response.body
    assert b"Traceback" not in response.body and store.root.encode() not in response.body
    assert any(store.root in record.getMessage() for record in caplog.records)


# ---- who may download ----------------------------------------------------------------------


def test_authorize_sees_the_request_and_the_name(store):
    name = store.save(PNG, "a.png")
    seen = []

    def authorize(environ, upload, record):
        seen.append((upload, record))
        return environ.get("HTTP_X_USER") == "ann"

    app = Downloads(store, authorize=authorize)
    assert request(app, f"/download/{name}", headers={"X-User": "bob"}).status == 403
    assert request(app, f"/download/{name}", headers={"X-User": "ann"}).body == PNG
    assert seen == [(name, None), (name, None)]
    # refused before the store is asked: a stranger cannot tell which names exist
    absent = name.replace(name.split(".")[2], "f" * 32)
    assert request(app, f"/download/{absent}").status == 403


@pytest.fixture
def db(tmp_path):
    db = DAL(f"sqlite://{tmp_path / 'app.sqlite'}", folder=str(tmp_path))
    db.define_table(
        "person",
        Field("owner"),
        Field("image", "upload", authorize=lambda row: row.owner != "mallory"),
    )
    yield db
    db.close()


def test_with_db_the_record_decides(store, db):
    ann = store.save(PNG, "ann.png", table="person", field="image")
    mallory = store.save(PNG, "m.png", table="person", field="image")
    orphan = store.save(PNG, "orphan.png", table="person", field="image")
    elsewhere = store.save(PNG, "x.png", table="thing", field="file")
    wrong_field = store.save(PNG, "x.png", table="person", field="owner2")
    db.person.insert(owner="ann", image=ann)
    db.person.insert(owner="mallory", image=mallory)
    db.commit()
    records = []

    def authorize(environ, name, record):
        records.append(record.owner)
        return True

    app = Downloads(store, db=db, authorize=authorize)
    assert request(app, f"/download/{ann}").body == PNG
    assert records == ["ann"]
    assert request(app, f"/download/{mallory}").status == 403  # the Field's authorize
    assert records == ["ann"]  # refused before the app's hook
    for name in (orphan, elsewhere, wrong_field):
        assert request(app, f"/download/{name}").status == 404


# ---- signed links --------------------------------------------------------------------------


def split(link):
    path, _, query = link.partition("?")
    return path, query


def test_a_signed_link_opens_the_door_until_it_expires(store):
    name = store.save(PNG, "a.png")
    other = store.save(PNG, "b.png")
    app = Downloads(store, secret=SECRET, authorize=lambda environ, name, record: False)
    assert request(app, f"/download/{name}").status == 403
    path, query = split(app.url(name, expires_in=60))
    assert path == f"/download/{name}"
    assert request(app, path, query=query).body == PNG
    assert request(app, f"/download/{other}", query=query).status == 403  # another upload
    expires, signature = (part.split("=", 1)[1] for part in query.split("&"))
    tampered = "B" if signature[0] != "B" else "C"
    for forged in (
        f"expires={int(expires) + 3600}&signature={signature}",  # a longer life
        f"expires={expires}&signature={tampered}{signature[1:]}",
        f"expires={expires}",
        f"signature={signature}",
        f"expires=%C2%B2&signature={signature}",  # a digit that is not 0-9
        f"expires={expires}&signature={signature}==",
        "expires=&signature=",
    ):
        assert request(app, path, query=forged).status == 403, forged
    past = int(time.time()) - 1
    raw = Signer(SECRET, PURPOSE).sign(f"{past}:{name}".encode())
    old = f"expires={past}&signature=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert request(app, path, query=old).status == 403  # well signed, expired


def test_signed_links_survive_a_secret_rotation_and_need_a_secret(store):
    name = store.save(PNG, "a.png")
    before = Downloads(store, secret=SECRET)
    path, query = split(before.url(name, expires_in=60, base="https://example.com/"))
    assert path == f"https://example.com/download/{name}"
    path = path.removeprefix("https://example.com")
    rotated = Downloads(store, secret=["a-newer-secret-for-downloads-0123456789", SECRET])
    assert request(rotated, path, query=query).body == PNG
    assert request(Downloads(store, secret="another-secret-for-downloads-0123456789"),
                   path, query=query).status == 403  # fmt: skip
    assert request(Downloads(store), path, query=query).status == 403  # no secret: no link
    with pytest.raises(ConfigError, match="secret"):
        Downloads(store).url(name, expires_in=60)
    with pytest.raises(ConfigError, match="secret"):
        Downloads(store, secret="short")
    with pytest.raises(ConfigError, match="expires_in"):
        before.url(name, expires_in=0)
    with pytest.raises(ValueError):
        before.url("../etc/passwd")
    assert before.url(name) == f"/download/{name}"


def test_configuration_errors(store):
    with pytest.raises(ConfigError, match="cache_control"):
        Downloads(store, cache_control="private\r\nSet-Cookie: a=b")
    with pytest.raises(ConfigError, match="unknown option"):
        Downloads(store, max_age=5)
    with pytest.raises(ConfigError, match="unknown option"):
        download(store, max_age=5)


# ---- the decorator -------------------------------------------------------------------------


def test_the_decorator_serves_the_name_a_view_returns(store):
    name = store.save(PNG, "a.png")

    @download(store, authorize=lambda environ, upload, record: upload == name)
    def picture(environ, start_response):
        """The picture of the person in the query."""
        if environ["QUERY_STRING"] == "login":
            start_response("303 See Other", [("Location", "/login")])
            return [b""]
        return name if environ["QUERY_STRING"] == "ann" else None

    assert picture.__doc__ == "The picture of the person in the query."
    assert request(picture, "/picture", query="ann").body == PNG
    assert request(picture, "/picture", query="nobody").status == 404
    redirected = request(picture, "/picture", query="login")
    assert redirected.status == 303 and redirected.header("Location") == "/login"
