"""The request's id: the one a trusted proxy or client sent, else one made here.

One id ties together the access record, every log record of the request, its error ticket
and the tasks it defers (App Engine's ``REQUEST_LOG_ID``). An incoming id is believed only
from a trusted peer (a trusted proxy, or any peer when no proxy is configured):

1. ``X-Request-ID`` when it is 1-128 characters of ``A-Z a-z 0-9 . _ : @ -`` (nginx's
   ``$request_id``, haproxy's ``unique-id-format``, a UUID; the alphabet ``TicketMiddleware``
   accepts too, so both keep the same id);
2. else the trace id of a valid W3C ``traceparent`` (https://www.w3.org/TR/trace-context/),
   so the request's logs join the caller's trace;
3. else 32 new random hex digits (128 bits from ``os.urandom``: about 0.4 µs).

Anything else (too long, a space, a comma from two joined headers, a CR/LF) is ignored, not
cleaned: an id is either exactly what was sent or a new one.
"""

from __future__ import annotations

import re

from scalekit.core import context

__all__ = ["current", "request_id_of", "trace_id"]

#: version-traceid-parentid-flags, lowercase hex; a later version may append "-..." fields.
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?", re.DOTALL
)
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16


def request_id_of(environ: dict, trusted: bool) -> str:
    """The id of the request in ``environ``: its ``X-Request-ID`` or ``traceparent`` trace id
    when ``trusted`` (the peer is a trusted proxy, or no proxies are configured) and well
    formed, else a new random one."""
    if trusted:
        given = environ.get("HTTP_X_REQUEST_ID")
        if given is not None and context.well_formed_request_id(given):
            return given
        parent = environ.get("HTTP_TRACEPARENT")
        if parent is not None:
            trace = trace_id(parent)
            if trace is not None:
                return trace
    return context.new_request_id()


def trace_id(traceparent: str) -> str | None:
    """The trace id of a W3C ``traceparent`` header, or None when the header is invalid
    (uppercase hex, version ``ff``, an all-zero trace or parent id, version 00 with extra
    fields)."""
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return None
    version, trace, parent, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace == _ZERO_TRACE or parent == _ZERO_PARENT:
        return None
    return trace


def current() -> str | None:
    """The id of the request this thread (or asyncio task) is serving; None outside one."""
    return context.request_id.get()
