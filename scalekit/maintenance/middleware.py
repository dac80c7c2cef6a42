"""WSGI glue: ``MaintenanceMiddleware`` for a whole app, ``with_maintenance`` for one view.

``down``: every request (but exempt static paths and operators) gets a 503 with Retry-After
and the maintenance page, as HTML or JSON by ``Accept``. ``read-only``: GET, HEAD and
OPTIONS pass; other methods get a 503, or an HTML form post a 303 to the page, which says
that browsing works, when saving resumes, and links back to the page the user was on.
With maintenance off a request costs one clock compare on top of the app.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError
from scalekit.core.options import known_options
from scalekit.maintenance.bypass import Bypass
from scalekit.maintenance.flags import FLAG_VARIABLE, Flag, Maintenance
from scalekit.maintenance.state import DOWN, READ_ONLY, State, format_time
from scalekit.wsgi.environ import MAINTENANCE_KEY as ENVIRON_KEY
from scalekit.wsgi.http import SAFE_METHODS, local_path, prefers_json
from scalekit.wsgi.pages import NO_STORE, fill, negotiated, page, read_template
from scalekit.wsgi.views import per_view

__all__ = [
    "ENVIRON_KEY",
    "MaintenanceMiddleware",
    "maintenance_check",
    "shared",
    "with_maintenance",
    "writes_enabled_for",
]

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_monotonic = time.monotonic

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{title}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto; padding: 0 1em">
<h1>{{title}}</h1>
<p>{{message}}</p>
%s
</body></html>
"""
#: The default pages by mode; ``page=`` replaces both (see :class:`MaintenanceMiddleware`).
DEFAULT_PAGES = {
    DOWN: _PAGE % "<p>Please try again {{when}}.</p>",
    READ_ONLY: _PAGE % "<p>You can still browse this site. Saving changes is paused: "
    'please try again {{when}}.</p>\n<p><a href="{{back}}">Back to the site</a></p>',
}
_TITLES = {DOWN: "Down for maintenance", READ_ONLY: "Read-only for maintenance"}

_shared: dict[tuple, Maintenance] = {}
_shared_lock = threading.Lock()
_default: list[Maintenance] = []  # the flag writes_enabled_for() asks when given none


@renamed_keyword("app", "app_name")
def shared(
    flag: Flag | Maintenance | str | None, app_name: str = "app", **options: Any
) -> Maintenance:
    """One :class:`Maintenance` per flag URL and app in a process, so the middleware, every
    decorated view and :func:`writes_enabled_for` share one cached read."""
    if isinstance(flag, Maintenance):
        return flag
    if flag is None:
        flag = os.environ.get(FLAG_VARIABLE)
        if not flag:
            raise ConfigError(
                f"no maintenance flag given: pass flag='redis://host:6379/0' (or "
                f"'file:///path/to/flagfile'), or set ${FLAG_VARIABLE}"
            )
    if not isinstance(flag, str):
        return Maintenance(flag, app_name, **options)
    key = (flag, app_name, tuple(sorted(options.items())))
    with _shared_lock:
        found = _shared.get(key)
        if found is None:
            found = _shared[key] = Maintenance(flag, app_name, **options)
        return found


@renamed_keyword("app", "app_name")
def writes_enabled_for(seconds: float = 0.0, flag: Maintenance | Flag | str | None = None,
                       app_name: str | None = None) -> bool:  # fmt: skip
    """False when maintenance is on or a window starts within ``seconds``.

    Asks ``flag`` (a URL, with ``app_name``), else the flag of the last ``MaintenanceMiddleware``
    made in this process, else ``$SCALEKIT_MAINTENANCE_FLAG`` with the app ``$SCALEKIT_APP``.
    Cached like the middleware's check, so it is cheap to call often.
    """
    if flag is None and app_name is None and _default:
        maintenance = _default[0]
    else:
        maintenance = shared(flag, app_name or os.environ.get("SCALEKIT_APP", "app"))
    return maintenance.writes_enabled_for(seconds)


class MaintenanceMiddleware:
    """Answer for ``app`` while the maintenance flag is on (see the module docstring).

    ``flag``: a URL (``redis://...``, ``file:///...``), a :class:`Flag` or a
    :class:`Maintenance`; ``None`` reads ``$SCALEKIT_MAINTENANCE_FLAG``.
    ``page``: an HTML file to show in both modes instead of :data:`DEFAULT_PAGES`, read once
    here; ``{{title}}``, ``{{mode}}``, ``{{message}}``, ``{{when}}`` (``at <end> (in about 30
    minutes)``, or ``in about 5 minutes``), ``{{back}}`` (the referring page on this site, else
    ``/``), ``{{retry_after}}`` and ``{{end}}`` are filled in, HTML-escaped.
    ``page_url``: where HTML form posts are redirected in read-only mode; served by the
    middleware while maintenance is on (``None``: no redirect, a 503).
    ``exempt``: path prefixes always passed to the app (static files).
    ``retry_after``: seconds, when the flag says nothing and has no end.
    ``allow``/``trusted_proxies``/``secret``/``bypass_*``: see
    :class:`~scalekit.maintenance.Bypass` (``bypass_seconds`` is its ``cookie_seconds``).
    """

    @known_options()
    def __init__(
        self,
        app: Callable,
        flag: Flag | Maintenance | str | None = None,
        *,
        app_name: str = "app",
        page: str | None = None,
        page_url: str | None = "/maintenance",
        exempt: Iterable[str] = ("/static/",),
        retry_after: int = 300,
        allow: Iterable[str] | str = (),
        trusted_proxies: Iterable[str] | str = (),
        secret: str | None = None,
        bypass_header: str = "X-Maintenance-Bypass",
        bypass_cookie: str = "scalekit_maintenance",
        bypass_seconds: int = 12 * 3600,
        cache_seconds: float = 1.0,
        retry_seconds: float = 5.0,
    ):
        self.app = app
        self.maintenance = shared(
            flag, app_name, cache_seconds=cache_seconds, retry_seconds=retry_seconds
        )
        _default[:] = [self.maintenance]
        self.templates = (
            dict.fromkeys(DEFAULT_PAGES, read_template(page, "maintenance page"))
            if page
            else DEFAULT_PAGES
        )
        if page_url is not None and not local_path(page_url):
            raise ConfigError(f"page_url {page_url!r} must be a path on this site, e.g. /down")
        self.page_url = page_url
        self.exempt = tuple(exempt) if not isinstance(exempt, str) else (exempt,)
        if retry_after < 0:
            raise ConfigError("retry_after cannot be negative")
        self.retry_after = int(retry_after)
        self.bypass = Bypass(
            allow, trusted_proxies, secret, bypass_header, bypass_cookie, bypass_seconds
        )

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        maintenance = self.maintenance
        if _monotonic() < maintenance._deadline:
            state = maintenance._active
        else:
            state = maintenance.refresh()
        if state is None:
            return self.app(environ, start_response)
        return self._during(state, environ, start_response)

    # -- maintenance is on -------------------------------------------------------------
    def _during(self, state: State, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        environ[ENVIRON_KEY] = state
        if path == self.page_url and method in ("GET", "HEAD"):
            status = "503 Service Unavailable" if state.mode == DOWN else "200 OK"
            return self._page(state, status, environ, start_response)
        if self.exempt and path.startswith(self.exempt):
            return self.app(environ, start_response)
        if self.bypass and self.bypass.allows(environ):
            return self.app(environ, self.bypass.granting(environ, start_response))
        if state.mode != DOWN and method in SAFE_METHODS:
            return self.app(environ, start_response)
        if (
            state.mode != DOWN
            and self.page_url is not None
            and environ.get("CONTENT_TYPE", "").lower().startswith(_FORM_TYPES)
            and not prefers_json(environ.get("HTTP_ACCEPT", ""))
        ):
            location = _script_name(environ) + self.page_url
            start_response("303 See Other", [
                ("Location", location), ("Content-Length", "0"), ("Cache-Control", "no-store"),
            ])  # fmt: skip
            return [b""]
        return self._page(state, "503 Service Unavailable", environ, start_response)

    def retry_seconds(self, state: State) -> int:
        """The Retry-After: the flag's, else the time left in its window, else the default."""
        if state.retry_after is not None:
            return state.retry_after
        if state.end is not None:
            return max(1, math.ceil(state.end - time.time()))
        return self.retry_after

    def _page(self, state: State, status: str, environ: dict, start_response: Callable):
        retry = self.retry_seconds(state)
        end = state.end and format_time(state.end)
        document = {"error": "maintenance", "mode": state.mode, "message": state.text,
                    "retry_after": retry, "end": end}  # fmt: skip
        content_type, body = negotiated(
            environ.get("HTTP_ACCEPT", ""), document, lambda: self._html(state, retry, environ)
        )
        retry_after = [("Retry-After", str(retry))] if status.startswith("503") else []
        answer = page(status, content_type, body, NO_STORE, *retry_after)
        start_response(answer.status, answer.headers)
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def _html(self, state: State, retry: int, environ: dict) -> str:
        values = {
            "title": _TITLES[state.mode], "mode": state.mode, "message": state.text,
            "retry_after": str(retry), "end": format_time(state.end) if state.end else "",
            "when": _when(state, retry), "back": self._back(environ),
        }  # fmt: skip
        return fill(self.templates[state.mode], values)

    def _back(self, environ: dict) -> str:
        """Where "back" leads: the referring page when it is on this site (and not the
        maintenance page), else the site's root."""
        script = _script_name(environ)
        referer = urlsplit(environ.get("HTTP_REFERER", ""))
        path = referer.path
        if (
            referer.scheme in ("http", "https")
            and referer.netloc == environ.get("HTTP_HOST")
            and local_path(path)
            and path != script + (self.page_url or "")
        ):
            return path
        return script + "/"


@known_options(MaintenanceMiddleware)
def with_maintenance(
    flag: Flag | Maintenance | str | Callable | None = None, **options: Any
) -> Callable:
    """Decorate one WSGI view so maintenance applies to it, as ``MaintenanceMiddleware`` does.

    ``@with_maintenance`` alone reads the flag URL from ``$SCALEKIT_MAINTENANCE_FLAG``.
    """
    if callable(flag) and not isinstance(flag, (Flag, Maintenance)):
        return with_maintenance()(flag)
    return per_view(MaintenanceMiddleware, flag, **options)


def maintenance_check(
    flag: Flag | Maintenance | str | Callable | None = None, **options: Any
) -> Callable:
    """The former name of :func:`with_maintenance`, kept for one release."""
    warnings.warn(
        "maintenance_check is now with_maintenance (named like with_session, with_db and "
        "with_tickets); the old name goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return with_maintenance(flag, **options)


def _script_name(environ: dict) -> str:
    """The app's ``SCRIPT_NAME`` without its last ``/``, or "" if it is not a path on this
    site (a client may set it)."""
    script = environ.get("SCRIPT_NAME", "").rstrip("/")
    return script if local_path(script) else ""


def _when(state: State, retry: int) -> str:
    """``at 2025-06-01 02:30:00 UTC (in about 30 minutes)`` when the window has an end, else
    ``in about 5 minutes`` (the Retry-After)."""
    if state.end is None:
        return f"in {_duration(retry)}"
    return f"at {format_time(state.end)} (in {_duration(state.end - time.time())})"


def _duration(seconds: float) -> str:
    """``about 30 minutes``: a wait in the unit a person reads, not ``1794 seconds``."""
    seconds = max(1, round(seconds))
    if seconds < 60:
        return f"{seconds} second{'s' * (seconds != 1)}"
    # 90 minutes, then 2 hours; 36 hours, then 2 days
    unit, size = next((u for u in (("day", 86400), ("hour", 3600)) if seconds >= 1.5 * u[1]),
                      ("minute", 60))  # fmt: skip
    count = round(seconds / size)
    return f"about {count} {unit}{'s' * (count != 1)}"
