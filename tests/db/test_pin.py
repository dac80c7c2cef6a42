"""Read-your-writes pins only where there are replicas to read from: a database without
replicas sets no ``scalekit_db_pin`` cookie and writes no pin into the session."""

from __future__ import annotations

from scalekit import db as scalekit_db
from scalekit.db import DBMiddleware, ReplicaSet
from scalekit.sessions import SessionMiddleware
from tests.db.conftest import define
from tests.wsgi import Client


def add(environ, start_response):
    """Insert a row (a write: the request runs on the primary and commits)."""
    db = scalekit_db.current().db
    db.item.insert(name="pinned?")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(db(db.item).count()).encode()]


def test_a_write_without_replicas_sets_no_pin_cookie_and_saves_no_session(tmp_path):
    primary = ReplicaSet(f"sqlite://{tmp_path}/app.sqlite", folder=str(tmp_path))
    bare = Client(DBMiddleware(add, primary, define=define))
    response = bare.request("/", method="POST")
    assert (response.status, response.text) == (200, "1")
    assert response.all("Set-Cookie") == [] and bare.cookies == {}

    sessions = f"file://{tmp_path}/sessions"
    with_session = SessionMiddleware(DBMiddleware(add, primary, define=define), sessions,
                                     secret="s" * 32)  # fmt: skip
    response = Client(with_session).request("/", method="POST")
    assert (response.status, response.text) == (200, "2")
    assert response.all("Set-Cookie") == []  # nothing pinned: the session stays unsaved
