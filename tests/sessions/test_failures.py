"""A store's server stops mid-run: the chosen policy applies, nothing stored is lost.

Each test runs its own server, so stopping it disturbs no other test. "Stopped" is a real
outage: SIGSTOP freezes redis-server or memcached (clients time out), PostgreSQL is shut
down with pg_ctl (connections are refused), and the file store's folder is replaced by a
file. Afterwards the server comes back and the session stored before is read intact.
"""

from __future__ import annotations

import contextlib
import logging
import time

import pytest

from scalekit import sessions
from tests.servers import MemcachedServer, PostgresServer, RedisServer
from tests.sessions.apps import read_all, route, set_values
from tests.wsgi import Client

SECRET = "failure-secret-0123456789abcdef-0123"
OUTAGE_KINDS = ["file", "postgres", "memcache", "redis"]


class Outage:
    """A private server (or folder) for one store kind, and a way to stop it for a while."""

    def __init__(self, kind: str, tmp_path):
        self.kind, self.tmp_path, self.server = kind, tmp_path, None
        self.options = {"dead_timeout": 1} if kind == "memcache" else {}

    def __enter__(self) -> Outage:  # noqa: PYI034 - typing.Self needs Python 3.11
        servers = {"redis": RedisServer, "memcache": MemcachedServer, "postgres": PostgresServer}
        if self.kind in servers:
            self.server = servers[self.kind]().start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        if self.kind == "file":
            return f"file://{self.tmp_path}/sessions"
        if self.kind == "memcache":
            return f"memcache://{self.server.address}"
        return self.server.url

    @contextlib.contextmanager
    def down(self):
        if self.kind in ("redis", "memcache"):
            self.server.freeze()
            try:
                yield
            finally:
                self.server.thaw()
                if self.kind == "memcache":  # a failed node is skipped for dead_timeout
                    time.sleep(self.options["dead_timeout"] + 0.2)
        elif self.kind == "postgres":
            self.server.stop_cluster()
            try:
                yield
            finally:
                self.server.start_cluster()
        else:
            folder, aside = self.tmp_path / "sessions", self.tmp_path / "sessions-aside"
            folder.rename(aside)
            folder.write_text("not a folder any more")
            try:
                yield
            finally:
                folder.unlink()
                aside.rename(folder)


@pytest.fixture(params=OUTAGE_KINDS)
def outage(request, tmp_path):
    with Outage(request.param, tmp_path) as running:
        yield running


def make(outage, app_name, actions, policy):
    store = sessions.open_store(outage.url, app_name=app_name, **outage.options)
    app = sessions.SessionMiddleware(route(actions), store, SECRET, app_name=app_name,
                                     on_store_error=policy)  # fmt: skip
    return app


def degraded(session, environ):
    session.extra = "written during the outage"
    return {"degraded": session.degraded, "data": dict(session)}


ACTIONS = {"/set": set_values(user="ann"), "/read": read_all, "/degraded": degraded}


def test_fail_closed_answers_503_and_keeps_the_stored_session(outage, app_name, caplog):
    app = make(outage, app_name, ACTIONS, "fail_closed")
    client = Client(app)
    client.get("/set")
    with outage.down(), caplog.at_level(logging.ERROR, logger="scalekit.sessions"):
        response = client.get("/read")
    assert response.status == 503
    assert response.header("Retry-After") == "5"
    assert b"Traceback" not in response.body and b"session store" in response.body
    assert response.header("Set-Cookie") is None
    assert any("fail_closed" in record.getMessage() for record in caplog.records)
    assert client.get("/read").text == '{"user": "ann"}'


def test_fail_open_goes_on_with_an_empty_unsaved_session(outage, app_name, caplog):
    app = make(outage, app_name, ACTIONS, "fail_open")
    client = Client(app)
    client.get("/set")
    cookies = dict(client.cookies)
    with outage.down(), caplog.at_level(logging.ERROR, logger="scalekit.sessions"):
        response = client.get("/degraded")
    assert response.status == 200
    assert response.text == '{"data": {"extra": "written during the outage"}, "degraded": true}'
    assert response.header("Set-Cookie") is None and client.cookies == cookies  # no logout
    assert any("fail_open" in record.getMessage() for record in caplog.records)
    assert client.get("/read").text == '{"user": "ann"}'


@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_a_store_that_stops_between_load_and_save(outage, app_name, policy, caplog):
    """A change that could not be saved is a 503 under either policy (never a 200)."""
    stopped = contextlib.ExitStack()

    def change_then_outage(session, environ):
        session.user = "bob"  # loaded while the server was up
        stopped.enter_context(outage.down())
        return "ok"

    app = make(outage, app_name, {**ACTIONS, "/change": change_then_outage}, policy)
    client = Client(app)
    client.get("/set")
    with stopped, caplog.at_level(logging.ERROR, logger="scalekit.sessions"):
        response = client.get("/change")
    assert response.status == 503 and b"Traceback" not in response.body
    assert any("session save failed" in record.getMessage() for record in caplog.records)
    # A write that timed out may still have been applied when the server resumed; either
    # way the stored session is whole: the old one or the new one, never lost or mixed.
    assert client.get("/read").text in ('{"user": "ann"}', '{"user": "bob"}')
