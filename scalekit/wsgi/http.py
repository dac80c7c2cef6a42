"""HTTP rules the pieces share: which methods are safe, and what content an error page takes."""

from __future__ import annotations

__all__ = ["SAFE_METHODS", "prefers_json"]

#: Methods that only read (RFC 9110 §9.2.1): they may go to a replica or pass maintenance.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
