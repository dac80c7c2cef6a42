"""Response header rules every piece that answers a request shares."""

from __future__ import annotations

__all__ = ["make_private"]


def make_private(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers of a response that sets a cookie: ``Cache-Control: private`` unless already
    stricter (private or no-store), ``public`` dropped, and ``Cookie`` added to ``Vary``."""
    result, cache_control, vary = [], [], []
    for name, value in headers:
        lower = name.lower()
        if lower == "cache-control":
            cache_control += [d.strip() for d in value.split(",") if d.strip()]
        elif lower == "vary":
            vary += [v.strip() for v in value.split(",") if v.strip()]
        else:
            result.append((name, value))
    directives = {d.split("=", 1)[0].strip().lower() for d in cache_control}
    if not directives & {"private", "no-store"}:
        cache_control = [d for d in cache_control if d.lower() != "public"]
        cache_control.insert(0, "private")
    if "*" not in vary and "cookie" not in {v.lower() for v in vary}:
        vary.append("Cookie")
    result.append(("Cache-Control", ", ".join(cache_control)))
    result.append(("Vary", ", ".join(vary)))
    return result
