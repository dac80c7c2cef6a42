"""A frozen PostgreSQL or MariaDB (every process SIGSTOPped: connections stay open, the
kernel still acknowledges, nothing answers) costs a request whose thread already holds a
connection no more than the statement timeout and a little: the store fails with
StoreUnavailable, the request gets 503, and all is well once the server runs again."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from scalekit import sessions
from scalekit.core.errors import ConfigError, StoreUnavailable
from tests.servers import MariaDBServer, PostgresServer
from tests.wsgi import Client

SID = "FrozenSessionId000000001"
SECRET = "frozen-secret-0123456789abcdef-0123"
BOUND = 1  # the statement timeout the tests set, in seconds
#: the promised bound: the statement timeout, the driver's margin after it, and a slow VM
DEADLINE = BOUND + 3


def within(seconds: float, call):
    """``call()``'s result or exception, once it returns within ``seconds``; fails if it
    hangs (its thread ends once the server runs again)."""
    outcome: list = []

    def run():
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert outcome, f"still waiting after {seconds} s"
    return outcome[0], time.monotonic() - started


@pytest.fixture(scope="module")
def postgres():
    with PostgresServer().running() as server:
        yield server


def test_a_frozen_server_fails_a_session_read_within_the_bound(postgres, app_name):
    url = f"{postgres.url}?statement_timeout={BOUND}"
    with contextlib.closing(sessions.open_store(url, app_name=app_name)) as store:
        store.save(SID, b"kept", 60, None)

        def load_twice():  # in one thread: the second load reuses the first's connection
            assert store.load(SID).data == b"kept"
            with postgres.frozen():
                return store.load(SID)

        failure, took = within(DEADLINE + 1, load_twice)
        assert isinstance(failure, StoreUnavailable), failure
        assert took < DEADLINE
        assert store.load(SID).data == b"kept"  # a new connection, once it runs again


def test_a_request_gets_503_within_the_bound(postgres, app_name):
    def view(environ, start_response):
        session = environ[sessions.ENVIRON_KEY]
        if environ["PATH_INFO"] == "/set":
            session["user"] = "ann"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(session.user).encode()]

    url = f"{postgres.url}?statement_timeout={BOUND}"
    with contextlib.closing(sessions.open_store(url, app_name=app_name)) as store:
        client = Client(sessions.SessionMiddleware(view, store, SECRET, app_name=app_name))

        def requests():  # one thread, as a server's worker: its connection is open
            assert client.get("/set").text == "ann"
            with postgres.frozen():
                return client.get("/read")

        response, took = within(DEADLINE + 1, requests)
        assert response.status == 503 and took < DEADLINE
        assert client.get("/read").text == "ann"


def test_the_statement_timeout_is_an_option(postgres, app_name):
    store = sessions.open_store(f"{postgres.url}?statement_timeout=0.5", app_name=app_name)
    with contextlib.closing(store):
        assert store.load(SID) is None  # a connection that works, with the option
    with pytest.raises(ConfigError, match="statement_timeout must be positive"):
        sessions.open_store(f"{postgres.url}?statement_timeout=-1", app_name=app_name)


def test_a_frozen_mariadb_fails_a_session_read_within_the_bound(app_name):
    with MariaDBServer().running() as server:
        url = f"{server.url}?statement_timeout={BOUND}"
        with contextlib.closing(sessions.open_store(url, app_name=app_name)) as store:
            store.save(SID, b"kept", 60, None)

            def load_twice():
                assert store.load(SID).data == b"kept"
                with server.frozen():
                    return store.load(SID)

            failure, took = within(DEADLINE + 1, load_twice)
            assert isinstance(failure, StoreUnavailable), failure
            assert took < DEADLINE
            assert store.load(SID).data == b"kept"
