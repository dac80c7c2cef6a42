"""Response header rules every piece that answers a request shares."""

from __future__ import annotations

__all__ = ["EXPIRED", "add_vary", "make_private", "vary_on_cookie", "without_expiry"]

#: An ``Expires`` long past (App Engine's): an HTTP/1.0 cache, which reads no ``Cache-Control``,
#: never keeps the response.
EXPIRED = ("Expires", "Fri, 01 Jan 1990 00:00:00 GMT")


def _take(headers: list[tuple[str, str]], name: str) -> tuple[list[tuple[str, str]], list[str]]:
    """``headers`` without the ``name`` header, and that header's comma-separated values."""
    rest, values = [], []
    for header, value in headers:
        if header.lower() == name:
            values += [v.strip() for v in value.split(",") if v.strip()]
        else:
            rest.append((header, value))
    return rest, values


def add_vary(headers: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    """Headers with ``name`` in one merged ``Vary`` (once, whatever its case; nothing added
    to ``Vary: *``), so a shared cache keys the response on that request header too."""
    rest, vary = _take(headers, "vary")
    if "*" not in vary and name.lower() not in {v.lower() for v in vary}:
        vary.append(name)
    return [*rest, ("Vary", ", ".join(vary))]


def vary_on_cookie(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers of a response built from what a cookie names (a session): ``Cookie`` added
    to ``Vary``, so a shared cache never serves it to a request with another cookie."""
    return add_vary(headers, "Cookie")


def make_private(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers of a response that sets a cookie: ``Cache-Control: private`` unless already
    stricter (private or no-store), ``public`` dropped, and ``Cookie`` added to ``Vary``."""
    result, cache_control = _take(vary_on_cookie(headers), "cache-control")
    directives = {d.split("=", 1)[0].strip().lower() for d in cache_control}
    if not directives & {"private", "no-store"}:
        cache_control = [d for d in cache_control if d.lower() != "public"]
        cache_control.insert(0, "private")
    return [*result, ("Cache-Control", ", ".join(cache_control))]


def without_expiry(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers of a response no cache may keep, however old: any ``Expires`` replaced by
    :data:`EXPIRED` (with ``Set-Cookie``: an old proxy must not serve one user's cookie to
    another)."""
    return [*_take(headers, "expires")[0], EXPIRED]
