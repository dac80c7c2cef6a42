"""HTTP header helpers for static files: Accept-Encoding, ETags, dates and byte ranges.

Each parser is lenient the way RFC 9110 asks: a malformed header is ignored (as if absent),
never an error for the client.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence

_CODING = re.compile(
    r"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:;\s*q\s*=\s*([0-9.]+)\s*)?$", re.IGNORECASE
)
_ALIASES = {"x-gzip": "gzip"}
_ETAG = re.compile(r'\s*(W/)?("[^"]*"|\*)\s*(?:,|$)')
_RANGE = re.compile(r"^\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*$", re.IGNORECASE)
_MAX_DIGITS = 19  # 10**19 bytes: more than any file


def parse_accept_encoding(header: str) -> dict[str, float]:
    """Each coding named in ``header`` (lower case) with its q-value; malformed items and
    q-values outside 0..1 are left out."""
    codings: dict[str, float] = {}
    for item in header.split(","):
        match = _CODING.match(item)
        if match is None:
            continue
        coding = match.group(1).lower()
        try:
            q = float(match.group(2)) if match.group(2) is not None else 1.0
        except ValueError:
            continue
        if 0.0 <= q <= 1.0:
            codings[_ALIASES.get(coding, coding)] = q
    return codings


def choose_encoding(header: str | None, available: Sequence[str]) -> str | None:
    """The coding to send among ``available`` (most preferred first), or ``None`` for
    identity. The highest q-value wins, ties go to the earlier coding; ``*`` sets the q of
    codings not named; identity wins only when named with a higher q than the others.
    Without the header only identity is sent (old clients); when identity is refused and
    nothing else fits, identity is sent anyway (RFC 9110 allows it, and it is never wrong
    bytes)."""
    if not header or not available:
        return None
    accepted = parse_accept_encoding(header)
    star = accepted.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in available:
        q = accepted.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    if best is not None and accepted.get("identity", 0.0) > best_q:
        return None
    return best


def etag_matches(header: str, etag: str) -> bool:
    """``If-None-Match``: weak comparison of ``etag`` against a list of tags, or ``*``."""
    target = etag.removeprefix("W/")
    position = 0
    while position < len(header):
        match = _ETAG.match(header, position)
        if match is None or match.end() == position:
            return False
        if match.group(2) in ("*", target):
            return True
        position = match.end()
    return False


def http_date(timestamp: float) -> str:
    """An IMF-fixdate: ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return email.utils.formatdate(timestamp, usegmt=True)


def parse_http_date(value: str) -> int | None:
    """Seconds since the epoch of an HTTP date, ``None`` when it is not one."""
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Unsatisfiable(Exception):
    """A byte range that selects nothing in the file: answer 416."""


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte positions (inclusive) of a single-range ``Range`` header, or
    ``None`` to send the whole file (no header, malformed, several ranges or another unit).
    Raises :class:`Unsatisfiable` when the range starts past the end."""
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = (_position(text) for text in match.groups())
    if first is None:
        if last is None:
            return None
        if last == 0 or size == 0:
            raise Unsatisfiable(header)
        return max(0, size - last), size - 1
    if last is not None and last < first:
        return None  # invalid: ignored
    if first >= size:
        raise Unsatisfiable(header)
    return first, min(last, size - 1) if last is not None else size - 1


def _position(digits: str) -> int | None:
    """A byte position, ``None`` when absent; one past any real file for a number too long
    for ``int()`` to read (thousands of digits): it then means "beyond the end"."""
    if not digits:
        return None
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS
