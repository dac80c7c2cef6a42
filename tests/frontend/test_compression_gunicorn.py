"""Compression under a real gunicorn (sync and gthread workers), decoded by real clients:
curl ``--compressed`` and Chromium for gzip and brotli, an event stream read as it arrives,
ETag/304.

The module is also the app gunicorn serves (``application``): ``/gzip/...`` behind a front
end offering gzip only, the rest behind the default one (brotli first)."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import time
import zlib

import brotli
import pytest

from scalekit.frontend import FrontendMiddleware
from tests.frontend.test_compression import BODY, HTML
from tests.gunicorn import gunicorn

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
GATE = "COMPRESSION_GATE"  # a folder: /events waits for the file its ?gate= names
EVENTS = [b"data: first %s\n\n" % (b"x" * 600), b"data: second\n\n", b"data: third\n\n"]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/page":
        if environ.get("HTTP_IF_NONE_MATCH") == '"v1"':  # a naive strong comparison
            start_response("304 Not Modified", [("ETag", '"v1"')])
            return [b""]
        length = str(len(BODY))
        start_response("200 OK", [HTML, ("ETag", '"v1"'), ("Content-Length", length)])
        return [BODY]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/html")])
        return (BODY[i : i + 1000] for i in range(0, len(BODY), 1000))
    if path == "/echo":  # what the client accepts, in a page worth compressing
        start_response("200 OK", [HTML])
        accepted = environ.get("HTTP_ACCEPT_ENCODING", "").encode()
        return [b'<html><body><p id="accepted">%s</p>%s</body></html>' % (accepted, BODY)]
    if path == "/events":
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return events(os.path.join(os.environ[GATE], environ["QUERY_STRING"]))
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


def events(gate: str):
    """The first event, then the others once the test opens ``gate`` (30 s at most: the
    client gives up after 5 s, so a buffered stream fails the test)."""
    yield EVENTS[0]
    deadline = time.monotonic() + 30
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield from EVENTS[1:]


default = FrontendMiddleware(app, access_log=None)
gzip_only = FrontendMiddleware(app, access_log=None, encodings=["gzip"])


def application(environ, start_response):
    if environ["PATH_INFO"].startswith("/gzip/"):
        environ["PATH_INFO"] = environ["PATH_INFO"].removeprefix("/gzip")
        return gzip_only(environ, start_response)
    return default(environ, start_response)


@pytest.fixture(scope="module", params=["sync", "gthread"])
def server(request, tmp_path_factory):
    gate = tmp_path_factory.mktemp("gate")
    threads = 1 if request.param == "sync" else 4
    env = {GATE: str(gate)}
    with gunicorn("tests.frontend.test_compression_gunicorn:application", env, workers=1,
                  threads=threads) as port:  # fmt: skip
        yield f"http://127.0.0.1:{port}", gate


def curl(url: str, *options: str) -> tuple[dict[str, str], bytes]:
    """Headers (lower-case names) and the body curl got, decoded as curl decodes it."""
    done = subprocess.run(["curl", "-sS", "--max-time", "20", "-D", "-", *options, url],
                          capture_output=True, check=True)  # fmt: skip
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    return {name.lower(): value for name, value in headers.items()}, body


@pytest.mark.parametrize("path", ["/page", "/stream"])
@pytest.mark.parametrize("coding", ["gzip", "br", None])
def test_curl_decodes_what_was_compressed(server, path, coding):
    url, _ = server
    accept = ["--compressed", "-H", f"Accept-Encoding: {coding}"] if coding else []
    headers, body = curl(url + path, *accept)
    assert body == BODY
    assert headers.get("content-encoding") == coding
    assert headers["vary"] == "Accept-Encoding"


def test_curl_raw_bytes_are_compressed(server):
    url, _ = server
    headers, raw = curl(url + "/page", "-H", "Accept-Encoding: gzip")
    assert int(headers["content-length"]) == len(raw) < len(BODY) / 5
    assert zlib.decompress(raw, wbits=31) == BODY


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_the_first_event_arrives_decoded_before_the_second_is_made(server, coding):
    url, gate = server
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("GET", f"/events?{coding}", headers={"Accept-Encoding": coding})
    response = connection.getresponse()
    assert response.getheader("Content-Encoding") == coding
    decoder = zlib.decompressobj(wbits=31) if coding == "gzip" else brotli.Decompressor()
    decompress = decoder.decompress if coding == "gzip" else decoder.process
    seen = b""
    while len(seen) < len(EVENTS[0]):
        data = response.read1()
        assert data, "the stream ended before the first event"
        seen += decompress(data)
    assert seen == EVENTS[0]  # the app is still waiting for the gate
    (gate / coding).touch()
    seen += decompress(response.read())
    assert seen == b"".join(EVENTS)
    connection.close()


def test_etag_and_if_none_match_give_304_through_the_server(server):
    url, _ = server
    headers, _ = curl(url + "/page", "--compressed")
    assert headers["etag"] == 'W/"v1"' and headers["content-encoding"] == "br"
    status = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--compressed",
                             "-H", f"If-None-Match: {headers['etag']}", url + "/page"],
                            capture_output=True, check=True).stdout  # fmt: skip
    assert status == b"304"
    headers, body = curl(url + "/page", "-H", f"If-None-Match: {headers['etag']}")
    assert headers["etag"] == '"v1"' and body == BODY  # identity: the strong tag


@pytest.mark.parametrize(("prefix", "coding"), [("", "br"), ("/gzip", "gzip")])
def test_chromium_renders_the_compressed_page(server, tmp_path, prefix, coding):
    url, _ = server
    headers, _ = curl(url + prefix + "/echo", "--compressed")
    assert headers["content-encoding"] == coding
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--no-first-run", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           url + prefix + "/echo"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    accepted = done.stdout.partition('<p id="accepted">')[2].partition("</p>")[0]
    assert "br" in accepted.replace(" ", "").split(","), done.stderr[-2000:]
    assert done.stdout.count("of the table</p>") == BODY.count(b"of the table</p>")
