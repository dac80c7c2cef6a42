"""``cache.action``: cache whole WSGI responses, web2py's ``@cache.action`` for WSGI apps.

Rules (what is cached, what never is):

* only ``GET`` and ``HEAD`` (each keyed separately), by script name + path + query string
  plus the request headers named in ``vary`` (Accept-Language and Accept-Encoding by
  default, so a compressed or translated page is never served to the wrong client);
* only requests that are provably anonymous are served from or stored in the cache: no
  ``Authorization`` header, no cookie whose name is not in ``allow_cookies`` (any cookie may
  be some framework's session: Flask's ``session``, Django's ``sessionid``, web2py's
  ``session_id_*``...), no ``environ["scalekit.session"]`` with an id. Other requests go to
  the app untouched, headers included, unless ``user_key`` is given: then a function of
  the environ returns who is asking (``None``: not cached), the response is cached for that
  user alone and marked ``private``;
* never a response that sets a cookie (``Set-Cookie``), that says ``Cache-Control:
  private``/``no-store``/``no-cache`` or ``Vary: *``, whose status is not in
  ``valid_statuses`` (200), or whose request put data into a new session;
* a cached response (and the one that filled the cache) gets ``Cache-Control: public``
  (or ``private`` with ``public=False``), ``max-age`` = the seconds left, and ``Expires``.

As in web2py, ``cache_model=None`` caches nothing on the server: responses only get the
client-side headers. Give a model (``cache.ram``, ``"redis"``...) to cache them server-side.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import TYPE_CHECKING

from scalekit.cache.model import CacheModel
from scalekit.core.errors import ScalekitError
from scalekit.core.options import known_options
from scalekit.wsgi.environ import SESSION_KEY
from scalekit.wsgi.response import collect_response

if TYPE_CHECKING:
    from scalekit.cache.facade import Cache

_DROPPED = frozenset(("cache-control", "expires"))
_NO_STORE = ("private", "no-store", "no-cache")
_MAX_KEY = 500


@known_options()
def cache_action(
    cache: Cache,
    time_expire: float | None = 300,
    cache_model: CacheModel | str | None = None,
    *,
    public: bool = True,
    prefix: str | None = None,
    vary: Iterable[str] = ("HTTP_ACCEPT_LANGUAGE", "HTTP_ACCEPT_ENCODING"),
    allow_cookies: Iterable[str] = (),
    user_key: Callable[[dict], str | None] | None = None,
    valid_statuses: Iterable[int] = (200,),
) -> Callable[[Callable], Callable]:
    """A decorator for a WSGI application (or one view written as one); see the module."""
    vary = tuple(vary)
    allowed = frozenset(allow_cookies)
    statuses = frozenset(valid_statuses)
    shared_scope = "public" if public else "private"  # an anonymous response's

    def decorate(app: Callable) -> Callable:
        key_prefix = prefix or f"action:{app.__module__}.{getattr(app, '__qualname__', app)}"

        @functools.wraps(app)
        def cached_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
            method = environ.get("REQUEST_METHOD", "GET").upper()
            if method not in ("GET", "HEAD"):
                return app(environ, start_response)
            if _anonymous(environ, allowed):
                who, scope = "", shared_scope
            else:
                user = None if user_key is None else user_key(environ)
                if user is None:
                    return app(environ, start_response)
                who, scope = hashlib.sha256(user.encode()).hexdigest(), "private"
            model = None if cache_model is None else cache.resolve(cache_model)
            key = _key(f"{key_prefix}:{who}", method, environ, vary)
            if model is not None:
                hit = model.get(key, time_expire=time_expire)
                if hit is not None:
                    age = time.time() - hit["stored_at"]
                    headers = _with_expiry(hit["headers"], scope, time_expire, age)
                    start_response(hit["status"], headers)
                    return [hit["body"]]
            status, headers, body = collect_response(app, environ)
            if _cacheable(status, headers, environ, statuses):
                stored_at = time.time()
                if model is not None:
                    response = {"status": status, "headers": headers, "body": body,
                                "stored_at": stored_at}  # fmt: skip
                    model.set(key, response, time_expire)
                headers = _with_expiry(headers, scope, time_expire, 0.0)
            start_response(status, headers)
            return [body]

        return cached_app

    return decorate


def _anonymous(environ: dict, allowed: frozenset[str]) -> bool:
    """True if nothing in the request can say who sends it: no ``Authorization``, no cookie
    outside ``allowed``, no scalekit session with an id."""
    if environ.get("HTTP_AUTHORIZATION"):
        return False
    session = environ.get(SESSION_KEY)
    if session is not None and getattr(session, "session_id", None) is not None:
        return False
    items = (item.strip() for item in environ.get("HTTP_COOKIE", "").split(";"))
    return all(item.partition("=")[0].strip() in allowed and "=" in item for item in items if item)


def _key(prefix: str, method: str, environ: dict, vary: tuple[str, ...]) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    parts = "|".join(environ.get(name, "") for name in vary)
    key = f"{prefix}:{method}:{path}?{query}|{parts}"
    if len(key) > _MAX_KEY:
        key = f"{prefix}:#{hashlib.sha256(key.encode('utf-8', 'replace')).hexdigest()}"
    return key


def _cacheable(status: str, headers: list, environ: dict, statuses: frozenset[int]) -> bool:
    try:
        code = int(status.split(" ", 1)[0])
    except ValueError:
        return False
    if code not in statuses:
        return False
    for name, value in headers:
        lower = name.lower()
        if lower == "set-cookie":
            return False
        if lower == "cache-control" and any(word in value.lower() for word in _NO_STORE):
            return False
        if lower == "vary" and value.strip() == "*":
            return False
    session = environ.get(SESSION_KEY)
    if session is not None:
        try:
            if len(session):  # the view put data into a new session: it depends on it
                return False
        except ScalekitError:  # the session store failed: do not cache what we cannot judge
            return False
    return True


def _with_expiry(headers: list, scope: str, time_expire: float | None, age: float) -> list:
    """``headers`` with Cache-Control and Expires for the seconds the response has left."""
    kept = [(name, value) for name, value in headers if name.lower() not in _DROPPED]
    if time_expire is None:
        kept.append(("Cache-Control", scope))
        return kept
    left = max(math.ceil(time_expire - age), 0)
    kept.append(("Cache-Control", f"{scope}, max-age={left}"))
    kept.append(("Expires", formatdate(time.time() + left, usegmt=True)))
    return kept
