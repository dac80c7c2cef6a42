"""remaining(): the time left of the current request's deadline, and scalekit's own Redis
and PostgreSQL calls bounded by it (real redis-server and PostgreSQL)."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from scalekit.cache import Cache, CacheUnavailable
from scalekit.connect.redis import RedisConnector, open_redis
from scalekit.connect.sql.deadline import bounded_connection
from scalekit.core import context
from scalekit.core.context import Limit, remaining
from tests.servers import TlsRedisServer


@contextlib.contextmanager
def deadline_in(seconds: float) -> Iterator[Limit]:
    """Run the block as a request whose deadline is ``seconds`` from now."""
    limit = Limit(time.monotonic() + seconds)
    token = context.deadline.set(limit)
    try:
        yield limit
    finally:
        context.deadline.reset(token)


def test_remaining_is_infinite_outside_a_deadline_and_counts_down_inside():
    assert remaining() == math.inf
    with deadline_in(5):
        assert 4 < remaining() <= 5
    with deadline_in(-1):
        assert remaining() == 0.0
    assert remaining() == math.inf


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[TlsRedisServer]:
    with TlsRedisServer().running() as server:
        yield server


@pytest.fixture(scope="module")
def tls_redis_url(tls_redis: TlsRedisServer) -> str:
    return tls_redis.url


@pytest.mark.parametrize("kind", ["tcp", "tls"])
def test_a_blocked_redis_call_ends_at_the_deadline_not_at_its_socket_timeout(kind, request):
    """Over TCP the lean path's own socket I/O (SO_RCVTIMEO); over TLS redis-py's."""
    url = request.getfixturevalue("redis_url" if kind == "tcp" else "tls_redis_url")
    connector = open_redis(url + ("&" if "?" in url else "?") + "socket_timeout=30")
    started = time.monotonic()
    with deadline_in(0.3), pytest.raises(redis.TimeoutError):
        connector.call("BLPOP", "test-remaining-empty", 0)
    assert 0.3 <= time.monotonic() - started < 2
    # the socket timeout is the connector's own again: a 1 s BLPOP outside a deadline
    # answers (nil) instead of timing out, and a short deadline no longer applies
    assert connector.call("BLPOP", "test-remaining-empty", 1) is None
    connector.close()


def test_a_redis_call_with_no_time_left_fails_at_once_and_the_connector_works_on(redis_url):
    connector = open_redis(f"{redis_url}?socket_timeout=30")
    connector.call("SET", "test-remaining-key", "v")
    started = time.monotonic()
    with deadline_in(-0.1), pytest.raises(redis.TimeoutError, match="deadline has passed"):
        connector.call("GET", "test-remaining-key")
    assert time.monotonic() - started < 0.1
    with deadline_in(10):  # far: the socket's own timeout, nothing lowered
        assert connector.call("GET", "test-remaining-key") == b"v"
    connector.close()


def test_a_piece_turns_a_deadline_that_has_passed_into_its_unavailable_error(redis_url):
    cache = Cache("test_remaining", redis=redis_url)
    with deadline_in(-0.1), pytest.raises(CacheUnavailable):
        cache.redis.increment("hits")
    assert cache.redis.increment("hits") >= 1


def test_a_postgresql_statement_ends_at_the_deadline(postgres_url):
    import psycopg2

    connection = psycopg2.connect(postgres_url, connection_factory=bounded_connection(30.0))
    started = time.monotonic()
    try:
        with deadline_in(0.5), pytest.raises(psycopg2.OperationalError):
            connection.cursor().execute("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 3
    finally:
        connection.close()


def test_a_redis_py_link_timed_out_at_the_deadline_does_not_connect_again(tls_redis):
    """Over TLS redis-py does the I/O and drops the socket on the timeout: putting the
    link's own timeout back must not open a new connection (its TLS handshake to a frozen
    server would wait the whole socket timeout, and its error replace the timeout's)."""
    connector = open_redis(tls_redis.url + "&socket_timeout=3")
    connector.call("SET", "test-remaining-tls", "v")
    with tls_redis.frozen():
        started = time.monotonic()
        with deadline_in(0.3), pytest.raises(redis.TimeoutError, match="Timeout reading"):
            connector.call("GET", "test-remaining-tls")
        assert time.monotonic() - started < 1.5
    assert connector.call("GET", "test-remaining-tls") == b"v"
    connector.close()


def test_no_time_left_keeps_the_connection_it_never_used(redis_url):
    connector = open_redis(f"{redis_url}?socket_timeout=30")
    first = connector.call("CLIENT", "ID")
    for _ in range(3):
        with deadline_in(-0.1), pytest.raises(redis.TimeoutError, match="deadline has passed"):
            connector.call("GET", "test-remaining-key")
    assert connector.call("CLIENT", "ID") == first
    connector.close()


def test_waiting_for_a_busy_connection_ends_at_the_deadline_and_says_so(redis_url):
    connector = open_redis(f"{redis_url}?max_connections=1&socket_connect_timeout=5")
    connector.call("PING")
    slots = connector._server.get().links.slots
    assert slots.take(0, [False])  # another thread's command holds the one connection
    try:
        with deadline_in(-0.1), pytest.raises(redis.TimeoutError, match="deadline passed"):
            connector.call("PING")
        started = time.monotonic()
        with deadline_in(0.2), pytest.raises(redis.TimeoutError, match="deadline passed"):
            connector.call("PING")
        assert 0.2 <= time.monotonic() - started < 1
    finally:
        slots.give()
    assert connector.call("PING") == b"PONG"
    connector.close()


def test_an_exception_right_after_taking_a_connection_slot_gives_the_slot_back(redis_url):
    """The deadline's asynchronous exception lands where a call returns: one landing as the
    slot taking returns (here raised there by a trace function) must not keep the slot."""
    connector = open_redis(f"{redis_url}?max_connections=1&socket_connect_timeout=0.2")
    connector.call("PING")

    class Interrupted(Exception):
        pass

    def trace(frame, event, arg):
        if frame.f_code is RedisConnector._take_slot.__code__:
            if event == "return":
                raise Interrupted
            return trace
        return None

    sys.settrace(trace)
    try:
        with pytest.raises(Interrupted):
            connector.call("PING")
    finally:
        sys.settrace(None)
    assert connector.call("PING") == b"PONG"  # the one slot is free again
    connector.close()


def test_with_no_socket_timeout_a_command_waits_the_time_left_inside_a_deadline_only(
    redis_server,
):
    """No socket timeout becomes the time left (and LATE) for a command inside a deadline;
    outside one, the link waits as long as the reply takes again."""
    connector = open_redis(redis_server.url, socket_timeout=None)
    connector.call("SET", "test-remaining-none", "v")
    with redis_server.frozen():
        started = time.monotonic()
        with deadline_in(0.3), pytest.raises(redis.TimeoutError, match="timeout"):
            connector.call("GET", "test-remaining-none")
        assert 0.3 <= time.monotonic() - started < 1
    with deadline_in(10):
        assert connector.call("GET", "test-remaining-none") == b"v"
    # outside a deadline no timeout again: a BLPOP answers (nil) when it times out itself
    assert connector.call("BLPOP", "test-remaining-empty", 0.5) is None
    connector.close()


def test_no_time_left_on_sentinel_is_no_failover(redis_sentinel, monkeypatch):
    """A refusal made before anything was sent says nothing about the primary: its links
    stay, and the topology is not asked where the primary went."""
    connector = open_redis(redis_sentinel.url, socket_timeout=30)
    first = connector.call("CLIENT", "ID", safe=True)
    refreshed = []
    monkeypatch.setattr(connector.topology, "refresh", lambda **kw: refreshed.append(kw))
    with deadline_in(-0.1), pytest.raises(redis.TimeoutError, match="deadline has passed"):
        connector.call("GET", "test-remaining-key", safe=True)
    assert refreshed == []
    assert connector.call("CLIENT", "ID", safe=True) == first
    connector.close()
