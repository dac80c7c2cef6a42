"""Flask's own ``session`` (``from flask import session``) on any scalekit store: the role
Flask-Session plays, with the middleware's engine (lazy loads, conflict-safe saves, signed
ids, ``Vary: Cookie``, 409/503 for a change that was not saved). Flask is imported only here.

    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(days=7)
    FlaskSessionInterface("redis://cache:6379/0", app, app_name="shop")
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

from flask import Flask, Request, Response, abort
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import Headers

from scalekit.core.checks import MAX_TTL
from scalekit.core.errors import ConfigError
from scalekit.core.options import known_options
from scalekit.sessions.cookies import SessionCookie
from scalekit.sessions.engine import SessionEngine, StoreFailure
from scalekit.sessions.middleware import failure_page, session_headers
from scalekit.sessions.session import Session
from scalekit.sessions.stores import SessionStore
from scalekit.wsgi.pages import Page

__all__ = ["FlaskSession", "FlaskSessionInterface"]

_EXTENSION = "scalekit.sessions"  # the app's engine, in app.extensions
_FLAGS = frozenset({"accessed", "modified", "permanent"})  # attributes, never session keys


class FlaskSession(Session, SessionMixin):
    """What ``flask.session`` is: a scalekit :class:`Session` with Flask's ``permanent``,
    ``modified``, ``accessed`` and ``new`` (and Flask-Session's ``sid``)."""

    __slots__ = ("_accessed",)

    def __init__(self, engine: _FlaskEngine, sid: str | None, https: bool):
        super().__init__(engine, sid, https)
        object.__setattr__(self, "_accessed", False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FLAGS:
            object.__setattr__(self, name, value)  # through the property's setter
        else:
            super().__setattr__(name, value)

    @property
    def accessed(self) -> bool:
        """Used through ``flask.session`` (Flask sets it) or loaded: the response varies on
        ``Cookie``."""
        return self._accessed or self._data is not None

    @accessed.setter
    def accessed(self, value: bool) -> None:
        object.__setattr__(self, "_accessed", bool(value))

    @property
    def modified(self) -> bool:
        """A key was set or deleted. Setting it after changing a nested value is harmless
        but not needed: the saved bytes are compared."""
        return self._dirty

    @modified.setter
    def modified(self, value: bool) -> None:
        object.__setattr__(self, "_dirty", bool(value))

    @property
    def permanent(self) -> bool:
        """The cookie outlives the browser (``PERMANENT_SESSION_LIFETIME``); the default is
        ``SESSION_PERMANENT`` (True, as Flask-Session's), and ``_permanent`` is stored only
        for a session that differs from it, so it never keeps an empty session alive."""
        return self.get("_permanent", self._engine.permanent)

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if bool(value) != self.permanent:  # the cookie's lifetime changes: send it again
            object.__setattr__(self, "_resend", True)
        if bool(value) == self._engine.permanent:
            self.pop("_permanent", None)
        else:
            self["_permanent"] = bool(value)

    @property
    def new(self) -> bool:
        """Not stored yet (or its record is gone)."""
        return self.session_id is None

    @property
    def sid(self) -> str | None:
        """Flask-Session's name for :attr:`session_id`."""
        return self.session_id


class _FlaskEngine(SessionEngine):
    """The engine with Flask's sessions: a permanent one's cookie has a Max-Age, any other
    lasts as long as the browser; a failed load answers 503 through Flask's ``abort``."""

    session_class = FlaskSession

    def __init__(self, store: SessionStore | str, secret: Any, *, permanent: bool, **options):
        super().__init__(store, secret, **options)
        self.permanent = permanent
        self.browser_cookie = copy.copy(self.cookie)
        self.browser_cookie.max_age = None

    def session_cookie(self, session: FlaskSession) -> SessionCookie:
        return self.cookie if session.permanent else self.browser_cookie

    def load(self, session: Session) -> None:
        try:
            super().load(session)
        except StoreFailure as exc:
            if session._failure is not exc:
                raise
            abort(_response(failure_page(self, exc)))


def _response(page: Page) -> Response:
    return Response(page.body, status=page.status, headers=page.headers)


class FlaskSessionInterface(SessionInterface):
    """Flask's session interface over ``store`` (a :class:`SessionStore` or a URL).

    Install it with ``FlaskSessionInterface(store, app)``, ``.init_app(app)`` or
    ``app.session_interface = ...``. The cookie follows Flask's ``SESSION_COOKIE_*`` keys,
    with scalekit's defaults where Flask's are unsafe: ``SESSION_COOKIE_SECURE=False``
    means Secure on HTTPS, ``SESSION_COOKIE_SAMESITE=None`` means Lax. The secret is
    ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` still verify) unless ``secret`` is given.
    ``PERMANENT_SESSION_LIFETIME`` (cut to 30 days, the longest TTL every store keeps) is
    the idle timeout and a permanent cookie's Max-Age;
    with ``SESSION_REFRESH_EACH_REQUEST`` both slide as the session is used (throttled by
    ``touch_fraction``). ``options`` are :class:`SessionEngine`'s, and win over the config.
    """

    @known_options(SessionEngine)
    def __init__(
        self,
        store: SessionStore | str,
        app: Flask | None = None,
        *,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        **options: Any,
    ):
        self.store, self.secret, self.options = store, secret, options
        self._building = threading.Lock()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Make this ``app``'s session interface, and check its settings now."""
        app.session_interface = self
        self._engine(app)

    def regenerate(self, session: FlaskSession) -> None:
        """A new id for ``session`` at the end of the request, the old record deleted (call
        it on login, against session fixation): Flask-Session's name for ``renew()``."""
        session.renew()

    def open_session(self, app: Flask, request: Request) -> FlaskSession | None:
        engine = self._engine(app)
        return None if engine is None else engine.begin(request.environ)

    def save_session(self, app: Flask, session: FlaskSession, response: Response) -> None:
        engine = self._engine(app)
        try:
            cookies = engine.finish(session)
        except StoreFailure as exc:  # the change was not saved: never a 200
            page = failure_page(engine, exc, saving=True)
            response.status = page.status
            response.headers = Headers(page.headers)
            response.set_data(page.body)
            return
        finally:
            engine.release(session)
        response.headers = Headers(session_headers(list(response.headers), cookies,
                                                   session.accessed))  # fmt: skip

    def _engine(self, app: Flask) -> _FlaskEngine | None:
        """The app's engine, built from its config on first use; ``None`` without a secret
        (Flask then gives the app its null session, which says so)."""
        engine = app.extensions.get(_EXTENSION)
        if engine is None:
            fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
            secret = self.secret or (app.secret_key and [app.secret_key, *fallbacks])
            if not secret:
                return None
            with self._building:
                engine = app.extensions.get(_EXTENSION)
                if engine is None:
                    engine = _FlaskEngine(self.store, secret, **self._settings(app))
                    app.extensions[_EXTENSION] = engine
        return engine

    def _settings(self, app: Flask) -> dict[str, Any]:
        if app.config.get("SESSION_COOKIE_PARTITIONED"):
            raise ConfigError("SESSION_COOKIE_PARTITIONED: scalekit's session cookie cannot be "
                              "partitioned; set it to False")  # fmt: skip
        lifetime = min(int(app.permanent_session_lifetime.total_seconds()), MAX_TTL)
        return {
            "cookie_name": self.get_cookie_name(app),
            "cookie_path": self.get_cookie_path(app),
            "cookie_domain": self.get_cookie_domain(app),
            "httponly": self.get_cookie_httponly(app),
            "secure": self.get_cookie_secure(app) or "auto",
            "samesite": self.get_cookie_samesite(app) or "Lax",
            "idle_timeout": lifetime,
            "cookie_max_age": lifetime,
            "touch_fraction": 0.1 if app.config["SESSION_REFRESH_EACH_REQUEST"] else 1.0,
            "permanent": app.config.get("SESSION_PERMANENT", True),
            **self.options,
        }
