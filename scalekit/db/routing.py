"""Which database a request reads from: by method, by named read-only action, and
read-your-writes pinning to the primary after a write (by session, else by cookie)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from scalekit.core.errors import ConfigError
from scalekit.wsgi.cookies import Cookie, cookie_value
from scalekit.wsgi.environ import SESSION_KEY
from scalekit.wsgi.http import SAFE_METHODS

__all__ = ["PIN_KEY", "SAFE_METHODS", "SESSION_KEY", "Router"]

PIN_KEY = "_scalekit_db_pinned_until"  # the session key (wall-clock seconds)


class Router:
    """Decides, per request, between replicas and the primary.

    A request is read-only when its method is in ``read_only_methods`` or its action is in
    ``read_only_actions``. An action is web2py's: ``/app/controller/function/args`` names
    ``function`` and ``controller/function`` (defaults ``default`` and ``index``; an
    extension such as ``.json`` is dropped). Give ``read_only_methods=()`` to route by
    actions only.

    After a request that wrote, the client's reads go to the primary for ``pin_seconds``
    (0: never): kept in its scalekit session when there is one, else in the
    ``pin_cookie`` cookie holding the expiry (a value further ahead than ``pin_seconds``
    is ignored, so a forged cookie cannot pin for longer).
    """

    def __init__(
        self,
        read_only_actions: Iterable[str] = (),
        read_only_methods: Iterable[str] = SAFE_METHODS,
        pin_seconds: float = 10.0,
        pin_cookie: str = "scalekit_db_pin",
    ):
        if isinstance(read_only_actions, str):
            raise ConfigError("read_only_actions takes a list of names, not one string")
        if pin_seconds < 0:
            raise ConfigError(f"pin_seconds={pin_seconds!r} cannot be negative")
        self.read_only_actions = frozenset(read_only_actions)
        self.read_only_methods = frozenset(m.upper() for m in read_only_methods)
        self.pin_seconds = pin_seconds
        self.pin_cookie = pin_cookie
        self._cookie = Cookie(pin_cookie, max_age=max(1, round(pin_seconds)))

    def read_only(self, environ: dict) -> bool:
        """True when the request should read from a replica."""
        if environ.get("REQUEST_METHOD", "GET").upper() in self.read_only_methods:
            return True
        if not self.read_only_actions:
            return False
        controller, function = _action(environ.get("PATH_INFO", ""))
        actions = self.read_only_actions
        return function in actions or f"{controller}/{function}" in actions

    def pinned(self, environ: dict) -> bool:
        """True while this client's reads must go to the primary (it wrote recently)."""
        if not self.pin_seconds:
            return False
        now = time.time()
        session = environ.get(SESSION_KEY)
        if session is not None:
            until = session.get(PIN_KEY)
        else:
            until = cookie_value(environ.get("HTTP_COOKIE", ""), self.pin_cookie)
        try:
            return now < float(until) <= now + self.pin_seconds + 1  # 1: rounding, skew
        except (TypeError, ValueError):
            return False

    def pin(self, environ: dict) -> list[tuple[str, str]]:
        """Pin this client to the primary; the headers to add to the response."""
        if not self.pin_seconds:
            return []
        until = time.time() + self.pin_seconds
        session = environ.get(SESSION_KEY)
        if session is not None:
            session[PIN_KEY] = round(until, 3)
            return []
        https = environ.get("wsgi.url_scheme") == "https"
        return [self._cookie.set_header(f"{until:.3f}", https=https)]


def _action(path: str) -> tuple[str, str]:
    """web2py's controller and function of ``/app/controller/function/args``."""
    parts = [part for part in path.split("/") if part]
    controller = parts[1] if len(parts) > 1 else "default"
    function = parts[2] if len(parts) > 2 else "index"
    return controller, function.partition(".")[0]
