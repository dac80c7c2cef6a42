"""The guestbook's views: read and sign it (a picture too), sign in and out; pictures at
``/download/<name>``; ``/fail`` and ``/healthz``.

Each view finds its request's pieces through the middleware: ``sessions.current()`` and
``db.current()`` (a replica for GET, the primary for POST, committed when the view
succeeds). Forms rely on the session cookie's SameSite=Lax against cross-site posts.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

import cached
import config
import jobs
import pictures
import templates
from models import check_password, hash_password

from scalekit import __version__, db, sessions
from scalekit.core.errors import CacheUnavailable
from scalekit.maintenance import READ_ONLY, State, format_time
from scalekit.uploads import limit_body, receive

MAX_FORM = 16 * 1024
#: The most bytes of a signing request: the picture and the form's text around it.
MAX_SIGNING = config.MAX_PICTURE + MAX_FORM
#: Seconds a receipt may stay pending before the page asks whether a task worker runs.
RECEIPT_LATE = 5.0


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
    entries, pending_since = cached.entries(lambda: db.current().db)
    pending = time.time() - pending_since if pending_since else 0
    body = templates.page(
        node=config.NODE, worker=os.getpid(), version=__version__,
        hits=_count_hit(), entries=entries,
        pending=pending if pending > RECEIPT_LATE else None, user=session.user,
        views=session.views or 0, saved_by=session.saved_by, flash=flash,
        banner=_banner(state) if state else None,
        paused=state is not None and state.mode == READ_ONLY,
        accept=pictures.ACCEPT, max_picture=config.MAX_PICTURE,
    )  # fmt: skip
    return _respond(start_response, "200 OK", body, "text/html; charset=utf-8")


def _count_hit() -> int | str:
    """The hit counter after this view, or "?" while the cache is down (an increment is
    not retried: it may have counted): an outage costs the number, not the page."""
    try:
        return cached.counter.increment("hits")
    except CacheUnavailable:
        return "?"


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


@limit_body(MAX_SIGNING)
def sign(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Add an entry, with its picture if one came, and defer its receipt; the cached
    fragment is rebuilt from the primary in this request, so no server caches a page
    rendered from a replica that has not caught up yet. ``then=fail``: fail after all that,
    so that the entry and its task are rolled back together, and its picture removed (a 500
    with its ticket; no entry, no task, no receipt, no picture).

    The picture is streamed into the store as the body arrives (``receive``); a body over
    :data:`MAX_SIGNING` is refused with a 413 (``limit_body``) and leaves nothing stored."""
    session = sessions.current()
    if not session.user:  # the body is not even read
        _save(session, flash="Sign in to sign the guestbook.")
        return _redirect(start_response)
    # Over the limit (UploadTooLarge), malformed or cut short (BadUpload): limit_body
    # answers 413 or 400, and nothing of the body is left stored.
    form, picture = _signing_form(environ)
    kept = False
    try:
        kept = _sign(session, form, picture)
    finally:
        if picture and not kept:  # refused, or its entry rolled back: it goes too
            pictures.store.delete(picture)
    return _redirect(start_response)


def _signing_form(environ: dict) -> tuple[dict[str, str], str | None]:
    """The signing form's text fields, and the name its picture was stored under (None:
    no picture chosen). A form of the browser's default type (no picture) is read as ever."""
    if not environ.get("CONTENT_TYPE", "").startswith("multipart/form-data"):
        return _form(environ), None
    received = receive(environ, pictures.store, max_size=MAX_SIGNING, fields=["picture"],
                       table="entry")  # fmt: skip
    return received.form, received.get("picture")


def _sign(session: sessions.Session, form: dict[str, str], picture: str | None) -> bool:
    """Insert the entry (see :func:`sign`); False if not signed (no text, or a "picture"
    that is not one)."""
    body = form.get("body", "").strip()[:500]
    if picture and not pictures.is_picture(picture):
        _save(session, flash="Not signed: a picture is a PNG, JPEG, GIF or WebP file.")
        return False
    if not body:
        return False
    dal = db.current().db
    entry_id = int(dal.entry.insert(author=session.user, body=body, picture=picture,
                                    created_on=datetime.datetime.now()))  # fmt: skip
    # Written to the outbox in this transaction, enqueued once it has committed.
    task_id = jobs.tasks.defer(jobs.write_receipt, entry_id, _transactional=True)
    dal(dal.entry.id == entry_id).update(receipt_task=task_id)
    if form.get("then") == "fail":
        raise RuntimeError(f"signed, then failed on purpose, on {config.NODE}")
    cached.entries(lambda: dal, refresh=True)
    _save(session, flash="Thank you for signing.")
    return True


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
    """Route by method and path; ``/download/...`` to the pictures' downloads."""
    path = environ.get("PATH_INFO") or "/"
    if path.startswith(pictures.PREFIX):
        return pictures.downloads(environ, start_response)
    view = ROUTES.get((environ["REQUEST_METHOD"], path))
    if view is None:
        return _respond(start_response, "404 Not Found", "not found\n", "text/plain")
    return view(environ, start_response)


def _form(environ: dict) -> dict[str, str]:
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM)
    except ValueError:
        length = 0
    fields = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace"))
    return {key: values[0] for key, values in fields.items()}


def _respond(start_response: Callable, status: str, text: str, kind: str) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


def _redirect(start_response: Callable) -> list[bytes]:
    start_response("303 See Other", [("Location", "/"), ("Content-Length", "0")])
    return [b""]
