"""Redis client-side caching (``client_cache=True``): repeated reads cost no round trip,
and a change made anywhere (another server, a delete, an expiry) is seen as soon as Redis's
invalidation message arrives: it is sent with the write, but the writer may have its reply
a moment before the other servers have the message."""

from __future__ import annotations

import contextlib
import os
import time

import pytest
import redis

from scalekit import sessions
from scalekit.core.errors import StoreUnavailable
from scalekit.sessions.stores.base import ANY
from tests.servers import RedisServer, TlsRedisServer
from tests.sessions.test_layer import commands, reset
from tests.wsgi import Client

SID = "CachedSessionId000000001"
SECRET = "test-secret-0123456789abcdef-0123456789"


def soon(read, expected, seconds: float = 2.0):
    """``read()`` once it returns ``expected``: the invalidation had to arrive first. Fails
    if it never does (a cache that kept the old value)."""
    deadline = time.monotonic() + seconds
    while (value := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.001)
    assert value == expected
    return value


@pytest.fixture
def servers(redis_url, app_name):
    """Two app servers' stores on one Redis, each with its own cache of reads."""
    url = redis_url + "?client_cache=true"
    a, b = sessions.open_store(url, app_name=app_name), sessions.open_store(url, app_name=app_name)
    yield a, b
    a.close()
    b.close()


def test_a_repeated_read_costs_no_round_trip(servers, redis_client):
    a, b = servers
    a.save(SID, b"one", 60, None)
    assert b.load(SID).data == b"one"
    reset(redis_client)
    for _ in range(3):
        assert b.load(SID).data == b"one"
    assert commands(redis_client) == {}


def test_changes_made_elsewhere_are_seen(servers):
    a, b = servers
    a.save(SID, b"one", 60, None)
    assert b.load(SID).data == b"one"
    a.save(SID, b"two", 60, ANY)
    soon(lambda: b.load(SID).data, b"two")
    touched = b.load(SID).touched_at
    time.sleep(0.01)
    a.touch(SID, 60)
    soon(lambda: b.load(SID).touched_at > touched, True)
    a.delete(SID)
    soon(lambda: b.load(SID), None)
    a.save(SID, b"three", 1, None)
    soon(lambda: b.load(SID) and b.load(SID).data, b"three")
    time.sleep(1.1)  # Redis expires the key itself (and says so)
    soon(lambda: b.load(SID), None)


def test_a_servers_own_writes_are_read_back(servers):
    a, _ = servers
    a.save(SID, b"one", 60, None)
    version = a.load(SID).version
    assert a.save(SID, b"two", 60, version)
    assert a.load(SID).data == b"two" and a.load(SID).version != version
    assert a.save(SID, b"stale", 60, version) is False  # compare-and-set still guards
    assert a.load(SID).data == b"two"


def test_a_lost_invalidation_connection_empties_the_cache(servers, redis_client):
    a, b = servers
    a.save(SID, b"one", 60, None)
    assert b.load(SID).data == b"one"
    assert redis_client.client_kill_filter(_type="pubsub") >= 1  # as a restart would
    a.save(SID, b"two", 60, ANY)  # no server is told: nobody listens
    assert b.load(SID).data == b"two"  # b saw its connection closed and read again
    reset(redis_client)
    assert b.load(SID).data == b"two"
    assert commands(redis_client) == {}  # cached again, on a new connection


def test_a_forked_process_has_a_cache_of_its_own(servers):
    a, b = servers
    a.save(SID, b"one", 60, None)
    assert b.load(SID).data == b"one"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reads through b too, never from the parent's connections
        try:
            os.write(write, b.load(SID).data)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 100) == b"one"
    a.save(SID, b"two", 60, ANY)
    soon(lambda: b.load(SID).data, b"two")  # the parent still hears of changes


def test_the_session_layer_on_two_servers(redis_url, app_name, redis_client):
    url = redis_url + "?client_cache=true"

    def view(environ, start_response):
        session = environ[sessions.ENVIRON_KEY]
        if environ["PATH_INFO"] == "/set":
            session["n"] = (session.n or 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(session.n).encode()]

    stores = [sessions.open_store(url, app_name=app_name) for _ in range(2)]
    nodes = [sessions.SessionMiddleware(view, store, SECRET, app_name=app_name) for store in stores]
    one = Client(nodes[0])
    assert one.get("/set").text == "1"
    two = Client(nodes[1], cookies=dict(one.cookies))
    assert two.get("/read").text == "1"
    reset(redis_client)
    assert two.get("/read").text == "1"
    assert commands(redis_client) == {}  # a signed-in page view without a round trip
    assert one.get("/set").text == "2"
    soon(lambda: two.get("/read").text, "2")
    for store in stores:
        store.close()


def test_the_option_is_read_from_the_url(redis_url, app_name):
    for query, expected in (("?client_cache=true", True), ("", False), ("?client_cache=0", False)):
        with contextlib.closing(sessions.open_store(redis_url + query, app_name=app_name)) as store:
            assert store.client_cache is expected


def test_a_stopped_server_fails_writes_and_cache_misses_but_not_cached_reads(app_name):
    with RedisServer().running() as server:
        url = server.url + "?client_cache=true&socket_timeout=0.3"
        with contextlib.closing(sessions.open_store(url, app_name=app_name)) as store:
            store.save(SID, b"kept", 60, None)
            assert store.load(SID).data == b"kept"
            with server.frozen():  # connections stay open, nothing answers
                assert store.load(SID).data == b"kept"  # from the cache, no round trip
                with pytest.raises(StoreUnavailable, match="failed to save a session"):
                    store.save(SID, b"lost", 60, ANY)
                with pytest.raises(StoreUnavailable, match="failed to load a session"):
                    store.load(SID)  # the failed save dropped the cached read
            # the timed-out save may have run once the server went on: whatever it holds,
            # the cache agrees with it
            with contextlib.closing(redis.Redis.from_url(server.url)) as raw:
                stored = raw.hget(f"scalekit:s:{app_name}:{SID}", "d")
            assert stored in (b"kept", b"lost") and store.load(SID).data == stored


def _lost_tracking(cut, app_name, kind=RedisServer):
    """Two servers' stores on a Redis of their own (no cache bound to save a stale read),
    ``b`` holding a cached read; ``cut(raw)`` loses b's tracked connection, then ``a`` signs
    the user out: ``b`` must see it at once."""
    with kind().running() as server:
        url = server.url + ("&" if "?" in server.url else "?")
        url += "client_cache=true&client_cache_max_age=3600"
        a, b = (sessions.open_store(url, app_name=app_name) for _ in range(2))
        with contextlib.closing(a), contextlib.closing(b), redis.Redis.from_url(server.url) as raw:
            a.save(SID, b"signed in", 60, None)
            assert b.load(SID).data == b"signed in"
            cut(raw)
            a.delete(SID)
            assert b.load(SID) is None


def _tracking_ids(raw) -> list[int]:
    return [c["id"] for c in raw.client_list() if "t" in c["flags"]]


def _kill_tracking(raw):
    ids = _tracking_ids(raw)
    assert ids  # b's data connection, which read with tracking on
    for client_id in ids:
        raw.client_kill_filter(_id=client_id)


@pytest.mark.parametrize("kind", [RedisServer, TlsRedisServer], ids=["tcp", "tls"])
def test_a_killed_data_connection_drops_what_it_read(app_name, kind):
    _lost_tracking(_kill_tracking, app_name, kind)


def test_a_killed_invalidation_connection_drops_what_was_read(app_name):
    _lost_tracking(lambda raw: raw.client_kill_filter(_type="pubsub"), app_name)


def test_a_data_connection_dropped_as_idle_drops_what_it_read(app_name):
    def idle(raw):
        ids = _tracking_ids(raw)
        raw.config_set("timeout", 1)
        deadline = time.monotonic() + 10
        while set(ids) & set(_tracking_ids(raw)) and time.monotonic() < deadline:
            time.sleep(0.1)  # Redis drops idle clients about once a second
        assert not set(ids) & set(_tracking_ids(raw))

    _lost_tracking(idle, app_name)


def test_a_data_connection_that_timed_out_drops_what_it_read(app_name):
    with RedisServer().running() as server:
        url = server.url + "?client_cache=true&client_cache_max_age=3600&socket_timeout=0.3"
        a, b = (sessions.open_store(url, app_name=app_name) for _ in range(2))
        with contextlib.closing(a), contextlib.closing(b):
            a.save(SID, b"signed in", 60, None)
            assert b.load(SID).data == b"signed in"
            with server.frozen(), pytest.raises(StoreUnavailable):
                b.load("OtherSessionId0000000001")  # a stall: b's tracked connection goes
            a.delete(SID)
            assert b.load(SID) is None


def test_a_cached_read_is_checked_again_past_its_max_age(redis_url, app_name, redis_client):
    url = redis_url + "?client_cache=true&client_cache_max_age=0.2"
    with contextlib.closing(sessions.open_store(url, app_name=app_name)) as store:
        assert store.client_cache_max_age == 0.2
        store.save(SID, b"one", 60, None)
        assert store.load(SID).data == b"one"
        reset(redis_client)
        assert store.load(SID).data == b"one"
        assert commands(redis_client) == {}
        time.sleep(0.3)
        assert store.load(SID).data == b"one"
        assert commands(redis_client) == {"hmget": 1}
        reset(redis_client)
        assert store.load(SID).data == b"one"
        assert commands(redis_client) == {}  # cached again, for another max age


def test_the_max_age_defaults_to_a_few_seconds(redis_url, app_name):
    with contextlib.closing(
        sessions.open_store(redis_url + "?client_cache=1", app_name=app_name)
    ) as store:
        assert 0 < store.client_cache_max_age <= 10
