"""scalekit.wsgi.conditional: If-Range, 304s, Range and Content-Disposition, the rules static
files and uploads' downloads share (the date and Range parsers: also tests/static/test_http)."""

from __future__ import annotations

import email.message
import email.policy
import unicodedata
from urllib.parse import unquote

import pytest

from scalekit.wsgi.conditional import (
    Unsatisfiable,
    content_disposition,
    http_date,
    if_range_holds,
    not_modified,
    parse_range,
)

ETAG = '"abc-10"'
MTIME = 1_700_000_000


@pytest.mark.parametrize(
    ("header", "holds"),
    [
        (None, True),
        ("", True),
        (ETAG, True),
        ('"other-10"', False),
        ("W/" + ETAG, False),  # If-Range takes a strong comparison only
        (http_date(MTIME), True),
        (http_date(MTIME - 1), False),
        ("yesterday", False),  # not a date, not a tag: the range is not for this file
    ],
)
def test_if_range(header, holds):
    environ = {} if header is None else {"HTTP_IF_RANGE": header}
    assert if_range_holds(environ, ETAG, MTIME) is holds


def test_if_range_never_holds_for_a_weak_etag():
    assert not if_range_holds({"HTTP_IF_RANGE": 'W/"x"'}, 'W/"x"', MTIME)


@pytest.mark.parametrize(
    ("headers", "answer"),
    [
        ({}, False),
        ({"HTTP_IF_NONE_MATCH": ETAG}, True),
        ({"HTTP_IF_NONE_MATCH": 'W/"abc-10"'}, True),  # weak comparison
        ({"HTTP_IF_NONE_MATCH": '"x", "abc-10"'}, True),
        ({"HTTP_IF_NONE_MATCH": "*"}, True),
        ({"HTTP_IF_NONE_MATCH": '"x"'}, False),
        ({"HTTP_IF_NONE_MATCH": "abc-10"}, False),  # malformed: matches nothing
        ({"HTTP_IF_MODIFIED_SINCE": http_date(MTIME)}, True),
        ({"HTTP_IF_MODIFIED_SINCE": http_date(MTIME + 60)}, True),
        ({"HTTP_IF_MODIFIED_SINCE": http_date(MTIME - 1)}, False),
        ({"HTTP_IF_MODIFIED_SINCE": "garbage"}, False),
        # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2)
        ({"HTTP_IF_NONE_MATCH": '"x"', "HTTP_IF_MODIFIED_SINCE": http_date(MTIME)}, False),
    ],
)
def test_not_modified(headers, answer):
    assert not_modified(headers, ETAG, MTIME) is answer


def test_a_range_past_the_end_is_unsatisfiable_and_a_reversed_one_ignored():
    assert parse_range("bytes=0-", 10) == (0, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=5-2", 10) is None
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=10-", 10)


def disposition_type(value: str) -> str:
    """The disposition type as Python's RFC-compliant header parser reads ``value``."""
    message = email.message.EmailMessage(policy=email.policy.HTTP)
    message["Content-Disposition"] = value
    return message["Content-Disposition"].content_disposition


@pytest.mark.parametrize(
    ("filename", "fallback", "full"),
    [
        ("report.pdf", "report.pdf", None),
        ("my report (1).pdf", "my report (1).pdf", None),
        ("é 🎉.txt", "e .txt", "é 🎉.txt"),
        ("Ünïcödé.png", "Unicode.png", "Ünïcödé.png"),
        ("日本語.txt", ".txt", "日本語.txt"),
        ('a"b.txt', "a_b.txt", 'a"b.txt'),
        ("a;b=c.txt", "a_b=c.txt", "a;b=c.txt"),
        ("50%.txt", "50_.txt", "50%.txt"),
        ("..\\..\\x.html", ".._.._x.html", None),
        ("../../etc/passwd", ".._.._etc_passwd", None),
    ],
)
def test_content_disposition_names_the_file_for_every_client(filename, fallback, full):
    value = content_disposition(filename)
    assert value.startswith("attachment; ")
    assert value.isascii() and "\r" not in value and "\n" not in value
    assert f'filename="{fallback}"' in value
    if full is None:
        assert "filename*" not in value
    else:
        encoded = value.split("filename*=UTF-8''", 1)[1]
        assert unquote(encoded) == full and ";" not in encoded and '"' not in encoded


@pytest.mark.parametrize(
    "filename",
    ["x.txt\r\nSet-Cookie: a=b", "x.txt\nLocation: /evil", "x\x00.txt", "x\x7f.txt"],
)
def test_content_disposition_cannot_be_split(filename):
    value = content_disposition(filename, inline=True)
    assert value.startswith("inline; ")
    assert all(ord(c) >= 32 and ord(c) != 127 for c in value)
    assert disposition_type(value) == "inline"


def test_content_disposition_without_a_name():
    assert content_disposition("") == "attachment"
    assert content_disposition("\r\n", inline=True) == 'inline; filename="__"'
    assert content_disposition("🎉") == (
        "attachment; filename=\"download\"; filename*=UTF-8''%F0%9F%8E%89"
    )


@pytest.mark.parametrize(
    "filename",
    ["invoice\u202egpj.exe", "a\u2066b\u2069.exe", "x\u200f.exe", "p\u2028q.exe", "r\u061c.exe"],
)
def test_content_disposition_shows_no_invisible_character(filename):
    """A right-to-left override would show ``invoice<RLO>gpj.exe`` as "invoiceexe.jpg"."""
    value = content_disposition(filename)
    fallback = value.split('filename="', 1)[1].split('"', 1)[0]
    full = unquote(value.split("filename*=UTF-8''", 1)[1]) if "filename*" in value else fallback
    for saved in (fallback, full):
        assert saved.endswith(".exe")
        assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in saved)
