"""The guestbook's views: read and sign it, sign in and out; ``/fail`` and ``/healthz``.

Each view finds its request's pieces through the middleware: ``sessions.current()`` and
``db.current()`` (a replica for GET, the primary for POST, committed when the view
succeeds). Forms rely on the session cookie's SameSite=Lax against cross-site posts.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

import config
import templates
from models import check_password, hash_password

from scalekit import __version__, db, sessions
from scalekit.cache import Cache
from scalekit.maintenance import READ_ONLY, State, format_time

_SHARED = "redis" if config.CACHE.startswith(("redis:", "rediss:", "unix:")) else "disk"
cache = Cache(config.APP, **{_SHARED: config.CACHE}, memcache=config.MEMCACHE)
#: The hit counter: Redis on a cluster (atomic HINCRBY), the disk cache on one machine.
counter = getattr(cache, _SHARED)
#: The rendered entries: memcached where there is one (losing it costs one query).
fragments = cache.memcache if config.MEMCACHE else counter
MAX_FORM = 16 * 1024


def index(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """The front page; it counts the signed-in user's views (a session write per view)."""
    session = sessions.current()
    if session.user:
        _save(session, views=(session.views or 0) + 1)
    return _page(environ, start_response, session)


def entries_page(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """The same page, not counted: it only reads the session (one store round trip, no
    write), as most pages of a signed-in user do."""
    return _page(environ, start_response, sessions.current())


def _page(environ: dict, start_response: Callable, session: sessions.Session) -> Iterable[bytes]:
    state = environ.get("scalekit.maintenance")  # set while maintenance is on
    flash = session.pop("flash", None)
    if flash:  # popping it changed the session: this node saves it
        _save(session)
    body = templates.page(
        node=config.NODE, worker=os.getpid(), version=__version__,
        hits=counter.increment("hits"),
        entries=fragments("entries", lambda: _entries(db.current().db), time_expire=30),
        user=session.user, views=session.views or 0, saved_by=session.saved_by, flash=flash,
        banner=_banner(state) if state else None,
        paused=state is not None and state.mode == READ_ONLY,
    )  # fmt: skip
    return _respond(start_response, "200 OK", body, "text/html; charset=utf-8")


def _save(session: sessions.Session, **changes: object) -> None:
    """Change the session, noting the node that saves it (at the end of this request)."""
    session.update(changes, saved_by=config.NODE)


def _banner(state: State) -> str:
    """The operator's message (``text``: theirs, or the mode's default) and when it ends."""
    return state.text + (f" Until {format_time(state.end)}." if state.end else "")


def sign_in(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Sign in, or sign up when the name is new; a new session id against fixation."""
    form, session = _form(environ), sessions.current()
    name, password = form.get("name", "").strip()[:64], form.get("password", "")
    if not name or not password:
        _save(session, flash="Give a name and a password.")
        return _redirect(start_response)
    dal = db.current().db
    user = dal(dal.auth_user.name == name).select().first()
    if user is None:
        dal.auth_user.insert(name=name, password_hash=hash_password(password))
    elif not check_password(password, user.password_hash):
        _save(session, flash=f"Wrong password for {name}.")
        return _redirect(start_response)
    session.renew()
    _save(session, user=name, views=0, flash=f"Signed in as {name}.")
    return _redirect(start_response)


def sign_out(environ: dict, start_response: Callable) -> Iterable[bytes]:
    session = sessions.current()
    session.renew(clear=True)
    _save(session, flash="Signed out.")
    return _redirect(start_response)


def sign(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Add an entry; the cached fragment is rebuilt from the primary in this request, so
    no server caches a page rendered from a replica that has not caught up yet."""
    body, session = _form(environ).get("body", "").strip()[:500], sessions.current()
    if not session.user:
        _save(session, flash="Sign in to sign the guestbook.")
    elif body:
        dal = db.current().db
        dal.entry.insert(author=session.user, body=body, created_on=datetime.datetime.now())
        fragments("entries", lambda: _entries(dal), time_expire=0)
        _save(session, flash="Thank you for signing.")
    return _redirect(start_response)


def fail(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Fail on purpose: TicketMiddleware answers 500 with the ticket id."""
    raise RuntimeError(f"a failure on purpose, on {config.NODE}")


def healthz(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """For the load balancer: this node runs; no session, database or cache I/O."""
    return _respond(start_response, "200 OK", f"ok {config.NODE}\n", "text/plain")


ROUTES = {
    ("GET", "/"): index,
    ("GET", "/entries"): entries_page,
    ("POST", "/sign-in"): sign_in,
    ("POST", "/sign-out"): sign_out,
    ("POST", "/entries"): sign,
    ("GET", "/fail"): fail,
    ("GET", "/healthz"): healthz,
}


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Route by method and path."""
    view = ROUTES.get((environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"))
    if view is None:
        return _respond(start_response, "404 Not Found", "not found\n", "text/plain")
    return view(environ, start_response)


def _entries(dal) -> str:
    rows = dal(dal.entry).select(orderby=~dal.entry.id, limitby=(0, 20))
    return templates.entries(
        [(r.author, r.created_on.strftime("%Y-%m-%d %H:%M"), r.body) for r in rows]
    )


def _form(environ: dict) -> dict[str, str]:
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM)
    except ValueError:
        length = 0
    fields = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace"))
    return {key: values[0] for key, values in fields.items()}


def _respond(start_response: Callable, status: str, text: str, kind: str) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body))),
                            ("X-Node", config.NODE)])  # fmt: skip
    return [body]


def _redirect(start_response: Callable) -> list[bytes]:
    start_response("303 See Other", [("Location", "/"), ("Content-Length", "0"),
                                     ("X-Node", config.NODE)])  # fmt: skip
    return [b""]
