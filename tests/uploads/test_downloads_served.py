"""Downloads served: the same answers from every backend; a store dying mid-download (the
body cut, a log line; under gunicorn the connection dropped); a real gunicorn with curl
(resume with Range, 304); Chromium: an uploaded HTML page or SVG with a script is saved or
shown inert, never run on the site's origin.

The module is also the app gunicorn serves (``application``, its store's URL in the
environment): ``/download/<name>`` (Downloads), ``/naive/<name>`` (the same bytes served
inline with their type and nothing else: what the browser test checks it would catch),
``/embed`` (a page framing both) and ``/open`` (a page that opens one in its place).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import logging
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from scalekit.core.errors import StoreUnavailable
from scalekit.uploads import open_store
from scalekit.uploads.downloads import Downloads
from scalekit.uploads.stores import CHUNK
from tests.gunicorn import gunicorn
from tests.servers import S3Server
from tests.uploads.test_downloads import SCRIPTED_HTML, SCRIPTED_SVG, SECRET, request

STORE_URL = "DOWNLOADS_STORE_URL"  # the environment variable gunicorn's app reads
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BIG = 5 * 1024 * 1024 + 123


def big_bytes() -> bytes:
    return hashlib.sha256(b"seed").digest() * (BIG // 32) + b"x" * (BIG % 32)


# ---- on other backends, and a store failing half-way ---------------------------------------


@pytest.mark.parametrize("store_kind", ["file", "sqlite", "postgres", "mariadb", "s3"])
def test_the_same_answers_from_every_backend(make_store, store_kind):
    store = make_store()
    name = store.save(big_bytes(), "big.bin")
    app = Downloads(store)
    whole = request(app, f"/download/{name}", file_wrapper=True)
    assert whole.status == 200 and whole.body == big_bytes()
    assert whole.wrapped is (store_kind == "file")  # sendfile only for a file on this machine
    span = {"Range": f"bytes={CHUNK - 1}-{2 * CHUNK}"}  # across the store's chunks
    part = request(app, f"/download/{name}", headers=span)
    assert part.status == 206 and part.body == big_bytes()[CHUNK - 1 : 2 * CHUNK + 1]
    etag = whole.header("ETag")
    assert request(app, f"/download/{name}", headers={"If-None-Match": etag}).status == 304
    other = request(Downloads(make_store()), f"/download/{name}", method="HEAD")
    assert other.header("ETag") == etag  # from the name and size: the same on every server
    assert request(app, f"/download/{name}x", method="HEAD").status == 404


@pytest.fixture
def fragile(private_s3):
    """A store on the private server with short timeouts, holding a 32 MB upload (more than
    the sockets' buffers: the server is still sending when it dies); restarted after."""
    bucket = private_s3.create_bucket(f"fragile-{time.time_ns()}")
    url = private_s3.url(bucket, "up", read_timeout="1", connect_timeout="1", retries="1")
    store = open_store(url)
    name = store.save(hashlib.sha256(b"x").digest() * (1 << 20), "long.bin")
    yield store, name
    store.close()
    if private_s3.process.poll() is not None:
        private_s3.restart()


def test_a_store_dying_mid_download_cuts_the_body_and_says_so(private_s3, fragile, caplog):
    store, name = fragile
    response = []
    body = Downloads(store)(
        {"REQUEST_METHOD": "GET", "PATH_INFO": f"/download/{name}"},
        lambda status, headers: response.extend([status, dict(headers)]),
    )
    assert response[0] == "200 OK" and response[1]["Content-Length"] == str(32 << 20)
    chunks = iter(body)
    received = len(next(chunks))
    private_s3.kill()
    with caplog.at_level(logging.ERROR, "scalekit.uploads"), pytest.raises(StoreUnavailable):
        for chunk in chunks:  # the server raises it out of the body: it drops the connection
            received += len(chunk)
    body.close()
    assert received < 32 << 20
    (line,) = [r.getMessage() for r in caplog.records if "download cut" in r.getMessage()]
    assert f"GET /download/{name}: download cut after {received} of {32 << 20} bytes" in line
    assert store.url in line and S3Server.secret_key not in line


def test_under_gunicorn_a_cut_download_closes_the_connection(private_s3, fragile):
    """A short body on a kept-alive connection would leave the client waiting: gunicorn
    drops it, and the client sees an incomplete read."""
    store, name = fragile
    env = {STORE_URL: private_s3.url(store.bucket, "up", read_timeout="1", retries="1")}
    with gunicorn("tests.uploads.test_downloads_served:application", env, workers=1,
                  threads=4) as port:  # fmt: skip
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        connection.request("GET", f"/download/{name}")
        answer = connection.getresponse()
        assert answer.status == 200 and answer.getheader("Connection") != "close"
        received = len(answer.read(1 << 20))
        private_s3.kill()
        with pytest.raises(http.client.IncompleteRead) as caught:
            answer.read()
        assert received + len(caught.value.partial) < 32 << 20
        connection.close()


# ---- through a real gunicorn ---------------------------------------------------------------


def embed_page(html: str, svg: str, prefix: str) -> bytes:
    """A page of the site framing an uploaded HTML page and SVG served under ``prefix``."""
    return (
        "<!doctype html><html><body><p id=marks>start</p>"
        f'<iframe src="{prefix}{html}"></iframe>'
        f'<object data="{prefix}{svg}" type="image/svg+xml"></object>'
        f'<img src="{prefix}{svg}">'
        "</body></html>"
    ).encode()


@functools.cache
def served() -> Downloads:
    return Downloads(open_store(os.environ[STORE_URL]), secret=SECRET)


def application(environ, start_response):
    """gunicorn's app: Downloads, the naive server the browser tests compare with, a page."""
    path, downloads = environ["PATH_INFO"], served()
    if path.startswith("/naive/"):  # what the tests check that Downloads never does
        name = path.removeprefix("/naive/")
        kind = "image/svg+xml" if name.endswith(".svg") else "text/html"
        start_response("200 OK", [("Content-Type", kind)])
        return downloads.store.read(name)
    if path == "/open":  # a page that opens the path in its query in its own place
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        target = environ["QUERY_STRING"]
        return [f'<p id=stayed>stayed</p><script>location.href="{target}"</script>'.encode()]
    if path == "/embed":
        html, svg, prefix = environ["QUERY_STRING"].split("&")
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [embed_page(html, svg, prefix)]
    return downloads(environ, start_response)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """gunicorn (gthread: keep-alive, so a truncated body must drop the connection) serving
    a file store holding a 5 MB file, an HTML page and an SVG with scripts."""
    folder = tmp_path_factory.mktemp("site")
    url = f"file://{folder / 'uploads'}"
    store = open_store(url)
    names = {
        "big": store.save(big_bytes(), "big file.bin"),
        "html": store.save(SCRIPTED_HTML, "page.html"),
        "svg": store.save(SCRIPTED_SVG, "drawing.svg"),
    }
    with gunicorn(
        "tests.uploads.test_downloads_served:application", {STORE_URL: url}, workers=1, threads=4
    ) as port:
        yield f"http://127.0.0.1:{port}", names, folder
    store.close()


def curl(*options: str) -> tuple[int, dict[str, str], bytes]:
    """curl's exit code, the last response's headers (lower-case names) and the body."""
    done = subprocess.run(["curl", "-sS", "--max-time", "30", "-D", "-", *options],
                          capture_output=True, check=False)  # fmt: skip
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    return int(lines[0].split()[1]) if lines[0] else 0, headers, body


def test_curl_downloads_resumes_and_revalidates(site, tmp_path):
    base, names, _ = site
    url = f"{base}/download/{names['big']}"
    status, headers, body = curl(url)
    assert status == 200 and body == big_bytes()
    assert headers["content-length"] == str(BIG) and headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"] == 'attachment; filename="big_file.bin"'
    partial = tmp_path / "big.part"
    partial.write_bytes(big_bytes()[:1_000_000])  # an interrupted download
    done = subprocess.run(["curl", "-sS", "-C", "-", "-o", str(partial), url], check=False)
    assert done.returncode == 0 and partial.read_bytes() == big_bytes()
    status, resumed, _ = curl("-r", "1000000-", "-o", os.devnull, url)
    assert status == 206 and resumed["content-range"] == f"bytes 1000000-{BIG - 1}/{BIG}"
    status, _, body = curl("-H", f"If-None-Match: {headers['etag']}", url)
    assert status == 304 and body == b""
    status, _, _ = curl("-r", f"{BIG}-", url)
    assert status == 416
    status, _, body = curl(f"{base}/download/..%2F..%2Fetc%2Fpasswd")
    assert status == 404 and b"root" not in body


def chromium_dom(profile, url: str) -> str:
    """The DOM headless Chromium dumps for ``url`` once loaded (or 2 s in: a frame or a
    navigation that became a download never finishes loading). Chromium may stay up after
    printing (a download pending): it is killed once the DOM is read, or after 30 s."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={profile}", "--timeout=2000",
               "--dump-dom", url]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, start_new_session=True,
                               env={**os.environ, "HOME": str(profile)})  # fmt: skip
    stop = functools.partial(os.killpg, process.pid, signal.SIGKILL)
    watchdog = threading.Timer(30, stop)
    watchdog.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "</html>" in line:
                break
    finally:
        watchdog.cancel()
        with contextlib.suppress(ProcessLookupError):
            stop()
        process.wait()
        process.stdout.close()
    return "".join(lines)


def test_chromium_never_runs_an_uploaded_page_or_svg(site, tmp_path):
    assert os.path.exists(CHROMIUM), "headless Chromium is missing: `make test` installs it"
    base, names, _ = site
    html, svg = names["html"], names["svg"]
    # the control: served naively, the same uploads run their scripts on the site's origin
    naive = chromium_dom(tmp_path / "a", f"{base}/embed?{html}&{svg}&/naive/")
    assert "HTML-RAN" in naive and "SVG-RAN" in naive
    # served by Downloads: framed, embedded or opened, nothing runs
    framed = chromium_dom(tmp_path / "b", f"{base}/embed?{html}&{svg}&/download/")
    assert '<p id="marks">start</p>' in framed and "RAN" not in framed
    # opened in the window: the control renders it, Downloads has it saved, the page stays
    opened = chromium_dom(tmp_path / "c", f"{base}/open?/naive/{html}")
    assert '<p id="mark">HTML-RAN</p>' in opened
    for name in (html, svg):
        opened = chromium_dom(tmp_path / "d", f"{base}/open?/download/{name}")
        assert '<p id="stayed">stayed</p>' in opened and "RAN" not in opened
