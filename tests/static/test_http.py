"""The header parsers: Accept-Encoding, If-None-Match, HTTP dates, Range."""

from __future__ import annotations

import pytest

from scalekit.wsgi.conditional import Unsatisfiable, http_date, parse_http_date, parse_range
from scalekit.wsgi.encodings import choose_encoding, parse_accept_encoding
from scalekit.wsgi.http import etag_matches

BOTH = ["br", "gzip"]


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        (None, None),  # no header: identity
        ("", None),
        ("gzip, deflate, br", "br"),  # br preferred on a tie
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("GZIP;Q=0.5", "gzip"),
        ("br;q=0.5, gzip", "gzip"),  # q-values win over our preference
        ("br;q=0, gzip;q=0.1", "gzip"),
        ("br;q=0, gzip;q=0", None),
        ("*", "br"),
        ("*;q=0.2, br;q=0", "gzip"),
        ("*;q=0", None),  # identity refused, nothing else: identity anyway
        ("identity", None),
        ("gzip;q=0.5, identity", None),  # identity named with a higher q
        ("gzip, identity;q=0", "gzip"),
        ("deflate, compress", None),
        ("gzip;q=2, br;q=abc, gzip;q=", None),  # malformed items are ignored
        ("gzip;q=1.0 , br ; q=0.9", "gzip"),
    ],
)
def test_choose_encoding(header, chosen):
    assert choose_encoding(header, BOTH) == chosen


def test_choose_among_what_exists_only():
    assert choose_encoding("br, gzip", ["gzip"]) == "gzip"
    assert choose_encoding("br", ["gzip"]) is None
    assert choose_encoding("gzip", []) is None
    assert parse_accept_encoding("gzip;q=0.3,BR") == {"gzip": 0.3, "br": 1.0}


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"abc-gzip"', True),
        ('W/"abc-gzip"', True),  # weak comparison
        ('"x", "abc-gzip"', True),
        ('"x",W/"abc-gzip"', True),
        ("*", True),
        ('"abc"', False),
        ('"x", "y"', False),
        ("abc-gzip", False),  # unquoted: malformed
        ("", False),
    ],
)
def test_etag_matches(header, matches):
    assert etag_matches(header, '"abc-gzip"') is matches


def test_http_dates_round_trip_and_garbage_is_none():
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777  # RFC 850
    for garbage in ("", "yesterday", "Sun, 99 Nov 1994 08:49:37 GMT"):
        assert parse_http_date(garbage) is None


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=90-", (90, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=50-500", (50, 99)),
        ("BYTES = 1 - 2", (1, 2)),
        ("bytes=5-1", None),  # invalid: whole file
        ("bytes=0-1,5-6", None),  # several ranges: whole file
        ("items=0-1", None),
        ("bytes=-", None),
        ("bytes=a-b", None),
    ],
)
def test_parse_range(header, span):
    assert parse_range(header, 100) == span


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_unsatisfiable_ranges(header, size):
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)
