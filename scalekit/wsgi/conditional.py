"""HTTP rules for sending a file: dates, byte ranges, conditional requests and the
``Content-Disposition`` header. Static files and uploads' downloads share them.

Each parser is lenient the way RFC 9110 asks: a malformed header is ignored (as if absent),
never an error for the client.
"""

from __future__ import annotations

import email.utils
import re
import unicodedata
from urllib.parse import quote

from scalekit.wsgi.http import etag_matches

__all__ = [
    "Unsatisfiable",
    "content_disposition",
    "http_date",
    "if_range_holds",
    "not_modified",
    "parse_http_date",
    "parse_range",
    "shown_name",
]

_RANGE = re.compile(r"^\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*$", re.IGNORECASE)
_MAX_DIGITS = 19  # 10**19 bytes: more than any file
#: What the quoted ASCII ``filename=`` keeps; anything else becomes ``_`` (no quote,
#: backslash, semicolon, CR, LF or other control character can end the parameter, and no
#: ``%`` can be taken for an escape).
_NOT_PLAIN = re.compile(r"[^A-Za-z0-9 !#$&'()*+,\-.:=?@\[\]^_`{|}~]")
#: RFC 5987 ``attr-char`` besides letters, digits and ``-._~`` (which ``quote`` keeps).
_ATTR_CHARS = "!#$&+^`|"
#: Unicode categories that show nothing of their own: controls (CR, LF, NUL...), format
#: characters (the bidi overrides that make ``invoice<U+202E>gpj.exe`` show as
#: "invoiceexe.jpg"), line and paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def shown_name(text: str) -> str:
    """``text`` with each control, bidi or other invisible format character and each path
    separator made ``_``: a file name shown to a person as it will be saved."""
    return "".join(
        "_" if char in "/\\" or unicodedata.category(char) in _INVISIBLE else char for char in text
    )


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


def if_range_holds(environ: dict, etag: str, mtime: int) -> bool:
    """``If-Range`` (RFC 9110 §13.1.5): a ``Range`` applies only if the file is the one the
    client has part of: the same strong ETag (the identity representation's), or the same
    ``Last-Modified`` date (``mtime``, whole seconds). True when the header is absent."""
    value = (environ.get("HTTP_IF_RANGE") or "").strip()
    if not value:
        return True
    if value.startswith(('"', "W/")):
        return not etag.startswith("W/") and value == etag
    return parse_http_date(value) == mtime


def not_modified(environ: dict, etag: str, mtime: int) -> bool:
    """True when a GET or HEAD is to be answered 304 (RFC 9110 §13.2.2): ``If-None-Match``
    matches ``etag`` when the header is present, else ``If-Modified-Since`` is no earlier
    than ``mtime`` (the ``Last-Modified`` sent, whole seconds)."""
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        return etag_matches(if_none_match, etag)
    since = parse_http_date(environ.get("HTTP_IF_MODIFIED_SINCE") or "")
    return since is not None and mtime <= since


def content_disposition(filename: str, inline: bool = False) -> str:
    """The ``Content-Disposition`` value (RFC 6266) for a file the client saves as
    ``filename``: ``attachment`` (or ``inline``), an ASCII ``filename="..."`` every client
    reads, and ``filename*=UTF-8''...`` (RFC 5987) when the name is not plain ASCII.
    Control, bidi and other invisible characters and path separators become ``_`` (a CR or
    LF cannot end the header, a ``/`` cannot name a folder, an override cannot disguise the
    extension); no name is sent when nothing is left."""
    kind = "inline" if inline else "attachment"
    name = shown_name(unicodedata.normalize("NFC", filename or "")).strip()
    if not name:
        return kind
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    fallback = _NOT_PLAIN.sub("_", ascii_name).strip() or "download"
    value = f'{kind}; filename="{fallback}"'
    if fallback != name:
        value += "; filename*=UTF-8''" + quote(name, safe=_ATTR_CHARS)
    return value
