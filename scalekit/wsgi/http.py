"""HTTP rules the pieces share: which methods are safe, what content an error page takes,
which configured values may go into a response header, how ``If-None-Match`` reads, and how
a request is named in a log line."""

from __future__ import annotations

import re

from scalekit.core.errors import ConfigError

__all__ = [
    "SAFE_METHODS",
    "etag_matches",
    "header_value",
    "local_path",
    "parse_etags",
    "prefers_json",
    "request_line",
]

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR, LF, NUL...: tab alone is allowed
_LOCAL_PATH = re.compile(r"/|(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+/?")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_LOGGED_PATH = 200  # characters of a path a log line shows
_ETAG = re.compile(r'\s*((?:W/)?"[^"]*"|\*)\s*(?:,|$)')

#: Methods that only read (RFC 9110 §9.2.1): they may go to a replica or pass maintenance.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def header_value(value: str, setting: str) -> str:
    """``value`` unchanged if it can be sent in a response header, else a
    :class:`ConfigError` naming ``setting``: a CR or LF would end the header and start
    another one (response splitting), other control characters are refused with them.
    Every piece checks its configured header values with this, when it is configured."""
    if not isinstance(value, str) or _CONTROL.search(value):
        raise ConfigError(f"{setting}={value!r} cannot go into a header: no CR, LF or control")
    return value


def local_path(path: str) -> bool:
    """True if ``path`` is a path on this site, safe as a redirect's ``Location``: one
    leading ``/`` then non-empty segments of URL path characters; ``//host``, ``/\\host``,
    a scheme, spaces and control characters are not."""
    return _LOCAL_PATH.fullmatch(path) is not None


def prefers_json(accept: str) -> bool:
    """True if an ``Accept`` header ranks JSON above HTML.

    JSON is ``application/json`` or any ``+json`` type, HTML is ``text/html``; the
    wildcards ``application/*`` and ``*/*`` count at half their q-value, so an explicit type
    wins over them. A malformed q-value counts as 0.
    """
    accept = accept.lower()
    if "json" not in accept and "application/*" not in accept:
        return False  # the common browser header: nothing more to parse
    best = {"json": 0.0, "html": 0.0}
    for item in accept.split(","):
        kind, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if kind.endswith(("/json", "+json")):
            best["json"] = max(best["json"], q)
        elif kind == "application/*":
            best["json"] = max(best["json"], q / 2)
        elif kind.endswith(("/html", "+html")):
            best["html"] = max(best["html"], q)
        elif kind == "*/*":
            best["html"] = max(best["html"], q / 2)
    return best["json"] > best["html"]


def parse_etags(header: str) -> list[str] | None:
    """The entity tags of an ``If-None-Match`` / ``If-Match`` list as sent (``W/"x"``,
    ``"y"``, ``*``), ``None`` when the header is malformed (then it is to be ignored)."""
    tags: list[str] = []
    position = 0
    while position < len(header):
        match = _ETAG.match(header, position)
        if match is None or match.end() == position:
            return None
        tags.append(match.group(1))
        position = match.end()
    return tags


def etag_matches(header: str, etag: str) -> bool:
    """``If-None-Match``: weak comparison (RFC 9110 §8.8.3.2) of ``etag`` against a list of
    tags, or ``*``; a malformed header matches nothing."""
    target = etag.removeprefix("W/")
    tags = parse_etags(header) or ()
    return any(tag == "*" or tag.removeprefix("W/") == target for tag in tags)


def request_line(environ: dict) -> str:
    """``METHOD /path`` for a log line: the path (the client's choice: servers decode ``%0A``
    into it) cut at 200 characters and its control characters escaped, so that it cannot
    forge a log line."""
    method = str(environ.get("REQUEST_METHOD", "-"))[:16]
    path = str(environ.get("PATH_INFO", ""))
    if len(path) > _LOGGED_PATH:
        path = path[:_LOGGED_PATH] + "..."
    return _UNPRINTABLE.sub(lambda found: f"\\x{ord(found.group()):02x}", f"{method} {path}")
