"""Compression of dynamic responses: negotiation, every skip rule, Vary, ETags and 304s,
streaming flushes and the BREACH padding, on the classes and through a WSGI stack."""

from __future__ import annotations

import contextlib
import gzip
import zlib

import brotli
import pytest

from scalekit.core.errors import ConfigError
from scalekit.frontend import FrontendMiddleware
from scalekit.frontend.compression import Compression, available_encodings
from scalekit.static import StaticFiles
from scalekit.wsgi.http import etag_matches, parse_etags
from tests.frontend.conftest import call, make_environ

BODY = b"<html><body>" + b"".join(b"<p>row %d of the table</p>\n" % i for i in range(400))
SIZE = len(BODY)
OPTIONS = {"access_log": None, "deadline": None}
HTML = ("Content-Type", "text/html; charset=utf-8")


def decode(coding: str | None, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)
    return data


def respond(accept=None, *, status="200 OK", headers=(HTML,), length=SIZE, method="GET",
            compression=None, **environ):  # fmt: skip
    """Headers and encoder ``Compression.respond`` gives one request; ``environ`` adds
    request headers (``HTTP_...``)."""
    compression = compression or Compression()
    environ = {"REQUEST_METHOD": method, **environ}
    if accept is not None:
        environ["HTTP_ACCEPT_ENCODING"] = accept
    compression.prepare(environ)
    return compression.respond(environ, status, list(headers), length)


def header(headers, name):
    values = [v for n, v in headers if n.lower() == name.lower()]
    assert len(values) <= 1, headers
    return values[0] if values else None


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        (None, None),
        ("", None),
        ("gzip, deflate, br, zstd", "br"),  # server preference on a tie
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("br;q=0.5, gzip", "gzip"),
        ("br;q=0, gzip", "gzip"),  # q=0 honoured
        ("gzip;q=0, br", "br"),
        ("gzip;q=0, br;q=0", None),
        ("*", "br"),
        ("*;q=0.3, br;q=0", "gzip"),
        ("*;q=0", None),
        ("identity", None),
        ("gzip;q=0.5, identity", None),
        ("gzip, identity;q=0", "gzip"),
        ("deflate", None),
        ("gzip;q=7, br;q=x", None),  # malformed items ignored
    ],
)
def test_the_coding_follows_accept_encoding(accept, coding):
    headers, encoder = respond(accept)
    assert header(headers, "Content-Encoding") == coding
    assert (encoder is None) is (coding is None)
    assert header(headers, "Vary") == "Accept-Encoding"
    if encoder is not None:
        assert decode(coding, encoder.whole(BODY)) == BODY
        assert header(headers, "Content-Length") is None


def test_gzip_alone_when_configured_and_brotli_must_be_installed():
    headers, _ = respond("br, gzip", compression=Compression(encodings=["gzip"]))
    assert header(headers, "Content-Encoding") == "gzip"
    assert available_encodings() == ("br", "gzip")  # the venv has the all extra
    for bad in ({"encodings": ["zstd"]}, {"encodings": []}, {"gzip_level": 0},
                {"brotli_quality": 12}, {"min_size": -1}, {"max_random_bytes": 257},
                {"gzip_level": True}, {"min_size": "1k"}):  # fmt: skip
        with pytest.raises(ConfigError, match="compression"):
            Compression(**bad)


@pytest.mark.parametrize(
    ("why", "kwargs"),
    [
        ("HEAD", {"method": "HEAD"}),
        ("1xx", {"status": "103 Early Hints"}),
        ("204", {"status": "204 No Content"}),
        ("304", {"status": "304 Not Modified"}),
        ("206", {"status": "206 Partial Content"}),
        (
            "416",
            {
                "status": "416 Range Not Satisfiable",
                "headers": [HTML, ("Content-Range", "bytes */100")],
            },
        ),
        ("app encoded", {"headers": [HTML, ("Content-Encoding", "gzip")]}),
        ("identity named", {"headers": [HTML, ("content-encoding", "identity")]}),
    ],
)
def test_nothing_done(why, kwargs):
    headers = list(kwargs.get("headers", [HTML]))
    assert respond("gzip, br", **kwargs) == (headers, None), why


@pytest.mark.parametrize(
    ("why", "kwargs"),
    [
        ("range asked", {"HTTP_RANGE": "bytes=0-9"}),
        ("no-transform", {"headers": [HTML, ("Cache-Control", "public, No-Transform")]}),
        ("small", {"length": 511}),
        ("q=0", {"accept": "gzip;q=0, br;q=0"}),
        ("no header", {"accept": None}),
    ],
)
def test_vary_but_not_compressed(why, kwargs):
    kwargs = {"accept": "gzip, br", **kwargs}
    headers, encoder = respond(kwargs.pop("accept"), **kwargs)
    assert encoder is None, why
    assert header(headers, "Vary") == "Accept-Encoding"
    assert header(headers, "Content-Encoding") is None


@pytest.mark.parametrize(
    ("content_type", "compressed"),
    [
        ("text/html; charset=utf-8", True),
        ("TEXT/CSS", True),
        ("text/event-stream", True),
        ("application/json", True),
        ("application/problem+json", True),
        ("application/atom+xml; charset=utf-8", True),
        ("image/svg+xml", True),
        ("application/javascript", True),
        ("application/wasm", True),
        ("image/png", False),
        ("image/jpeg", False),
        ("video/mp4", False),
        ("application/zip", False),
        ("application/gzip", False),
        ("application/octet-stream", False),
        ("font/woff2", False),
        ("", False),
        ("text", False),
    ],
)
def test_only_compressible_types(content_type, compressed):
    headers, encoder = respond("gzip", headers=[("Content-Type", content_type)])
    assert (encoder is not None) is compressed
    assert (header(headers, "Vary") is not None) is compressed


def test_types_and_min_size_are_options():
    compression = Compression(types=["application/x-custom", "*+yaml"], min_size=10)
    for kind, compressed in (("application/x-custom", True), ("application/openapi+yaml", True),
                             ("text/html", False)):  # fmt: skip
        _, encoder = respond("gzip", headers=[("Content-Type", kind)], length=10,
                             compression=compression)  # fmt: skip
        assert (encoder is not None) is compressed, kind
    _, encoder = respond("gzip", length=9, compression=compression)
    assert encoder is None


def test_a_stream_of_unknown_length_and_event_streams_are_compressed_whatever_their_size():
    assert respond("gzip", length=None)[1] is not None
    sse = [("Content-Type", "text/event-stream")]
    assert respond("gzip", headers=sse, length=12)[1] is not None


def test_content_length_dropped_when_compressing_kept_otherwise():
    with_length = [HTML, ("Content-Length", str(len(BODY)))]
    headers, _ = respond("gzip", headers=with_length)
    assert header(headers, "Content-Length") is None
    headers, _ = respond(None, headers=with_length)
    assert header(headers, "Content-Length") == str(len(BODY))


@pytest.mark.parametrize(
    ("vary", "merged"),
    [
        ("Cookie", "Cookie, Accept-Encoding"),
        ("cookie, accept-encoding", "cookie, accept-encoding"),
        ("*", "*"),
    ],
)
def test_vary_merged_once(vary, merged):
    headers, _ = respond("gzip", headers=[HTML, ("Vary", vary)])
    assert header(headers, "Vary") == merged


def test_strong_etag_weakened_when_compressed_only():
    headers, _ = respond("gzip", headers=[HTML, ("ETag", '"v1"')])
    assert header(headers, "ETag") == 'W/"v1"'
    headers, _ = respond("gzip", headers=[HTML, ("ETag", 'W/"v2"')])
    assert header(headers, "ETag") == 'W/"v2"'
    headers, _ = respond(None, headers=[HTML, ("ETag", '"v1"')])
    assert header(headers, "ETag") == '"v1"'


def etag_app(environ, start_response):
    """An app with a strong ETag that compares If-None-Match naively (exact string)."""
    if environ.get("HTTP_IF_NONE_MATCH") == '"v1"':
        start_response("304 Not Modified", [("ETag", '"v1"')])
        return [b""]
    start_response("200 OK", [HTML, ("ETag", '"v1"'), ("Content-Length", str(len(BODY)))])
    return [BODY]


def test_the_apps_304_still_answers_a_weakened_etag():
    app = FrontendMiddleware(etag_app, **OPTIONS)
    response = call(app, headers={"Accept-Encoding": "gzip"})
    assert response.status == 200 and gzip.decompress(response.body) == BODY
    assert response.header("Content-Length") == str(len(response.body))
    etag = response.header("ETag")
    assert etag == 'W/"v1"'
    response = call(app, headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
    assert response.status == 304
    assert response.header("ETag") == 'W/"v1"'  # the tag the client holds
    assert response.header("Vary") == "Accept-Encoding"
    # without compression nothing is rewritten: the strong tag is the app's business
    response = call(app, headers={"If-None-Match": '"v1"'})
    assert response.status == 304 and response.header("ETag") == '"v1"'
    assert call(app, headers={"If-None-Match": etag}).status == 200


def test_through_the_middleware_a_stream_is_sent_as_it_is_made():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        for n in range(3):
            yield b"data: %d\n\n" % n
            assert decoded == n + 1  # the server had this event before the next is made

    decoded = 0
    decoder = brotli.Decompressor()
    environ = make_environ(headers={"Accept-Encoding": "br"})
    body = FrontendMiddleware(app, **OPTIONS)(environ, lambda status, headers: None)
    with contextlib.closing(body):  # closing ends the request (its context variables)
        for out in body:
            if decoder.process(out):
                decoded += 1
    assert decoder.is_finished() and decoded == 3


@pytest.mark.parametrize("key", ["HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH"])
def test_etag_lists_rewritten_by_tags_malformed_left_alone(key):
    compression = Compression()
    for sent, seen in (('W/"a", "b", W/"c,W/"', '"a", "b", "c,W/"'), ('"a"', '"a"'),
                       ('W/"a" garbage', 'W/"a" garbage'), ("*", "*")):  # fmt: skip
        environ = {"REQUEST_METHOD": "PUT", "HTTP_ACCEPT_ENCODING": "br", key: sent}
        compression.prepare(environ)
        assert environ[key] == seen
    assert parse_etags('W/"a" , "b",*') == ['W/"a"', '"b"', "*"]
    assert parse_etags('"a" "b"') is None
    assert etag_matches('W/"x", "v1"', 'W/"v1"') and not etag_matches("v1", '"v1"')


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_every_streamed_chunk_decodes_to_what_was_fed(coding):
    _, encoder = respond(coding, length=None)
    decoder = zlib.decompressobj(wbits=31) if coding == "gzip" else brotli.Decompressor()
    decompress = decoder.decompress if coding == "gzip" else decoder.process
    fed, seen = b"", b""
    for i in range(5):
        chunk = b"data: event %d %s\n\n" % (i, b"x" * i * 100)
        fed += chunk
        out = encoder.chunk(chunk)
        assert out
        seen += decompress(out)
        assert seen == fed  # flushed: nothing held back
    assert encoder.chunk(b"") == b""
    seen += decompress(encoder.finish())
    assert seen == fed
    if coding == "gzip":
        assert decoder.eof and not decoder.unused_data
    else:
        assert decoder.is_finished()


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_breach_padding_varies_the_length_and_still_decodes(coding):
    lengths = set()
    for _ in range(30):
        _, encoder = respond(coding)
        data = encoder.whole(BODY)
        assert decode(coding, data) == BODY
        lengths.add(len(data))
        _, encoder = respond(coding, length=None)
        assert decode(coding, encoder.chunk(BODY) + encoder.finish()) == BODY
    assert len(lengths) > 5  # 0..100 bytes: 30 draws give many lengths
    assert max(lengths) - min(lengths) <= 100 + 2  # + a brotli metadata block's 2-byte header
    no_padding = Compression(max_random_bytes=0)
    outputs = {respond(coding, compression=no_padding)[1].whole(BODY) for _ in range(3)}
    assert len(outputs) == 1 and decode(coding, outputs.pop()) == BODY


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_empty_and_large_bodies(coding):
    for data in (b"", bytes(range(256)) * 4096):
        _, encoder = respond(coding, length=None)
        assert decode(coding, encoder.whole(data)) == data
        _, encoder = respond(coding, length=None)
        assert decode(coding, encoder.finish()) == b""


def test_gzip_of_a_finished_body_is_no_larger_than_zlibs_level_6():
    """libdeflate (the ``all`` extra) at level 6 writes less than zlib at level 6; a
    stream, which only zlib can flush, is zlib's size."""
    _, encoder = respond("gzip", compression=Compression(max_random_bytes=0))
    whole = encoder.whole(BODY)
    assert gzip.decompress(whole) == BODY
    assert len(whole) <= len(zlib.compress(BODY, 6, wbits=31))


def test_static_files_behind_the_front_end(tmp_path):
    """A precompressed variant goes out as it is; a text file without one is compressed,
    and its 304 still works; a range is sent as asked."""
    (tmp_path / "app.js").write_bytes(BODY)
    (tmp_path / "app.js.br").write_bytes(brotli.compress(BODY, quality=11))
    (tmp_path / "page.html").write_bytes(BODY)
    app = FrontendMiddleware(StaticFiles(None, tmp_path), **OPTIONS)
    accept = {"Accept-Encoding": "br, gzip"}
    variant = call(app, "/app.js", headers=accept)
    assert variant.body == (tmp_path / "app.js.br").read_bytes()
    assert variant.header("Content-Encoding") == "br"
    page = call(app, "/page.html", headers=accept)
    assert page.header("Content-Encoding") == "br" and brotli.decompress(page.body) == BODY
    assert page.header("ETag").startswith('W/"')
    again = call(app, "/page.html", headers={**accept, "If-None-Match": page.header("ETag")})
    assert again.status == 304
    part = call(app, "/page.html", headers={**accept, "Range": "bytes=0-9"})
    assert part.status == 206 and part.body == BODY[:10]
