"""HTTP header helpers for static files: dates and byte ranges (Accept-Encoding is in
:mod:`scalekit.wsgi.encodings`, ETags in :mod:`scalekit.wsgi.http`, shared with the front
end's compression).

Each parser is lenient the way RFC 9110 asks: a malformed header is ignored (as if absent),
never an error for the client.
"""

from __future__ import annotations

import email.utils
import re

_RANGE = re.compile(r"^\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*$", re.IGNORECASE)
_MAX_DIGITS = 19  # 10**19 bytes: more than any file


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
