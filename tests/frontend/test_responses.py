"""The response headers the front end lets out: hop-by-hop and malformed headers dropped and
logged (name only), cookies made private and expired, a default Content-Type."""

from __future__ import annotations

import logging

import pytest

from scalekit.frontend import FrontendMiddleware
from scalekit.wsgi.headers import EXPIRED
from tests.frontend.conftest import call

FUTURE = ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")


def answering(status: str, headers: list, body: bytes = b"body") -> FrontendMiddleware:
    """The front end around an app that answers ``status`` with ``headers``."""

    def app(environ, start_response):
        start_response(status, headers)
        return [body]

    return FrontendMiddleware(app, compress=False, access_log=None, deadline=None)


def names(response) -> list[str]:
    return [name.lower() for name, _ in response.headers]


@pytest.mark.parametrize("header", ["Connection", "Keep-Alive", "Proxy-Authenticate",
                                    "Proxy-Authorization", "TE", "Trailer",
                                    "Transfer-Encoding", "Upgrade"])  # fmt: skip
def test_hop_by_hop_headers_are_dropped_and_logged(header, caplog):
    caplog.set_level(logging.WARNING, "scalekit.frontend")
    response = call(answering("200 OK", [("Content-Type", "text/plain"), (header, "x")]))
    assert response.status == 200 and header.lower() not in names(response)
    [record] = [r for r in caplog.records if r.name == "scalekit.frontend"]
    assert header in record.getMessage()
    assert response.header("X-Request-ID") in record.getMessage()


def test_a_switching_protocols_answer_keeps_its_connection_and_upgrade():
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "x")]
    response = call(answering("101 Switching Protocols", headers, b""))
    assert all(response.header(name) == value for name, value in headers)


@pytest.mark.parametrize(
    "header",
    [
        ("X-Token", "secret\r\nSet-Cookie: evil=1"),  # response splitting
        ("X-Token", "secret\nmore"),
        ("X-Token", "secret\x00"),
        ("X-Token", "secret\x7f"),
        ("X-Token", "sécret"),  # not ASCII
        ("X Token", "secret"),  # not a token
        ("X-Token:", "secret"),
        ("X-Tökèn", "secret"),
        ("", "secret"),
        ("X-Token", b"secret"),  # bytes, not str
        (b"X-Token", "secret"),
        (["X-Token"], "secret"),  # not even hashable
        ("Content-Length", "12; secret"),
    ],
)
def test_malformed_headers_are_dropped_and_logged_without_their_value(header, caplog):
    caplog.set_level(logging.WARNING, "scalekit.frontend")
    response = call(answering("200 OK", [("Content-Type", "text/plain"), header]))
    assert response.status == 200 and response.body == b"body"
    assert all("secret" not in str(value) for _, value in response.headers)
    assert response.header("Set-Cookie") is None
    [record] = [r for r in caplog.records if r.name == "scalekit.frontend"]
    assert record.levelno == logging.WARNING
    assert "secret" not in record.getMessage() and "secret" not in caplog.text
    assert response.header("X-Request-ID") in record.getMessage()


def test_good_headers_pass_as_they_are():
    headers = [("Content-Type", "text/plain"), ("X-Tab", "a\tb"), ("ETag", '"v1"'),
               ("Link", "</a>; rel=preload"), ("X-Odd_Name!", "~`|^")]  # fmt: skip
    response = call(answering("200 OK", headers))
    for name, value in headers:
        assert response.header(name) == value


def test_a_response_that_sets_a_cookie_becomes_private_and_expired():
    headers = [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), FUTURE,
               ("Cache-Control", "public, max-age=600")]  # fmt: skip
    response = call(answering("200 OK", headers))
    assert response.all("Set-Cookie") == ["a=1", "b=2"]
    assert response.header("Cache-Control") == "private, max-age=600"
    assert response.all("Expires") == [EXPIRED[1]]
    assert "cookie" in response.header("Vary").lower()


@pytest.mark.parametrize("strict", ["no-store", "private, no-cache", "no-store, max-age=0"])
def test_a_stricter_cache_control_is_kept(strict):
    response = call(answering("200 OK", [("Set-Cookie", "a=1"), ("Cache-Control", strict)]))
    assert response.header("Cache-Control") == strict
    assert response.header("Expires") == EXPIRED[1]


def test_without_a_cookie_caching_headers_are_the_apps():
    response = call(answering("200 OK", [("Cache-Control", "public, max-age=600"), FUTURE]))
    assert response.header("Cache-Control") == "public, max-age=600"
    assert response.header("Expires") == "Thu, 01 Jan 2099 00:00:00 GMT"
    assert response.header("Vary") is None


def test_content_type_defaults_to_html():
    response = call(answering("200 OK", []))
    assert response.header("Content-Type") == "text/html; charset=utf-8"
    assert call(answering("404 Not Found", [])).header("Content-Type").startswith("text/html")
    kept = call(answering("200 OK", [("content-type", "text/csv")]))
    assert kept.all("Content-Type") == ["text/csv"]


def test_head_gets_the_get_headers():
    response = call(answering("200 OK", [("Content-Length", "4")], b""), method="HEAD")
    assert response.header("Content-Type") == "text/html; charset=utf-8"
    assert response.header("Content-Length") == "4"


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified", "103 Early Hints"])
def test_a_status_without_a_body_gets_no_content_type_nor_length(status):
    response = call(answering(status, [], b""))
    assert response.header("Content-Type") is None
    assert response.header("Content-Length") is None


def test_a_finished_body_gets_its_length():
    response = call(answering("200 OK", [("Content-Type", "text/plain")], b"12345"))
    assert response.header("Content-Length") == "5"


def test_the_apps_request_id_header_is_replaced_by_the_requests():
    response = call(answering("200 OK", [("X-Request-ID", "made-up")]),
                    headers={"X-Request-ID": "abc-123"})  # fmt: skip
    assert response.all("X-Request-ID") == ["abc-123"]
