"""HTTP header helpers for static files, now in :mod:`scalekit.wsgi.conditional` (shared
with uploads' downloads) and re-exported here: dates and byte ranges. Accept-Encoding is in
:mod:`scalekit.wsgi.encodings`, ETags in :mod:`scalekit.wsgi.http`."""

from __future__ import annotations

from scalekit.wsgi.conditional import Unsatisfiable, http_date, parse_http_date, parse_range

__all__ = ["Unsatisfiable", "http_date", "parse_http_date", "parse_range"]
