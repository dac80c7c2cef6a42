"""The Redis connector on real servers. Its lean path (``RedisConnector.call``): connections
are reused, never after a failure that could leave a stale reply, replaced when found dead,
bounded by ``max_connections``, and never shared with a forked child. Its scripts take
exactly the keys they declare; its lease has one owner; its namespaces name the keys stored
so far."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import redis

from scalekit import sessions
from scalekit.connect.redis import Namespace, RedisConnector, Script, open_redis
from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.core.urls import parse
from tests.servers import RedisServer, TlsRedisServer


def lazy(url: str, **options) -> RedisConnector:
    return open_redis(url, **options)


@pytest.fixture
def client(redis_url):
    client = lazy(redis_url)
    yield client
    client.close()


def test_one_idle_connection_serves_consecutive_commands(client):
    first = client.call("CLIENT", "ID")
    assert client.call("SET", "lean:k", b"v") == b"OK"
    assert client.call("GET", "lean:k") == b"v"
    assert client.call("CLIENT", "ID") == first


def test_a_reply_error_raises_and_keeps_the_connection(client):
    first = client.call("CLIENT", "ID")
    client.call("SET", "lean:text", b"not a number")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        client.call("INCR", "lean:text")
    assert client.call("CLIENT", "ID") == first


def test_a_connection_killed_while_idle_is_replaced_without_an_error(client, redis_url):
    first = client.call("CLIENT", "ID")
    redis.Redis.from_url(redis_url).client_kill_filter(_id=first)
    assert client.call("PING") == b"PONG"
    assert client.call("CLIENT", "ID") != first


def test_a_timed_out_connection_is_closed_so_its_late_reply_is_never_read():
    with RedisServer().running() as server:
        client = lazy(server.url, socket_timeout=0.3)
        client.call("SET", "answer", b"42")
        with server.frozen(), pytest.raises(redis.TimeoutError, match="timeout"):
            started = time.monotonic()
            client.call("SET", "late", b"written after the timeout")
        assert time.monotonic() - started < 2  # socket_timeout=0.3 bounds the wait
        # The late "OK" for SET went to a closed socket, not to the next command.
        assert client.call("GET", "answer") == b"42"
        assert client.call("GET", "late") == b"written after the timeout"
        client.close()


def test_a_reply_larger_than_one_read_arrives_whole(client):
    value = os.urandom(3 * 1024 * 1024)
    client.call("SET", "lean:big", value)
    assert client.call("GET", "lean:big") == value
    assert client.call("STRLEN", "lean:big") == len(value)


def test_rediss_talks_tls_and_checks_the_certificate():
    with TlsRedisServer().running() as server:
        store = sessions.open_store(server.url, app_name="tls")
        assert store.save("s" * 32, b"over TLS", 60, None)
        assert store.load("s" * 32).data == b"over TLS"
        assert store.client.ping()  # the pipeline client goes over TLS too
        store.close()
        untrusting = sessions.open_store(server.url.partition("?")[0], app_name="tls")
        with pytest.raises(StoreUnavailable, match=r"(?i)certificate"):
            untrusting.load("s" * 32)


def test_a_down_server_raises_a_connection_error_quickly():
    with RedisServer().running() as server:
        url = server.url
    client = lazy(url, socket_connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        client.call("PING")
    assert time.monotonic() - started < 2


def test_max_connections_makes_callers_wait_for_a_free_connection(redis_url):
    client = lazy(redis_url, max_connections=1, socket_timeout=5, socket_connect_timeout=3)
    blocked = threading.Thread(target=client.call, args=("BLPOP", "lean:empty", 0.5))
    blocked.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert client.call("PING") == b"PONG"  # waited for BLPOP to give the connection back
    blocked.join()
    assert time.monotonic() - started >= 0.2
    client.close()


def test_max_connections_gives_up_after_the_connect_timeout(redis_url):
    client = lazy(redis_url, max_connections=1, socket_timeout=5, socket_connect_timeout=0.2)
    blocked = threading.Thread(target=client.call, args=("BLPOP", "lean:empty", 1))
    blocked.start()
    time.sleep(0.1)
    with pytest.raises(redis.ConnectionError, match=r"all 1 connections .* are busy"):
        client.call("PING")
    blocked.join()
    assert client.call("PING") == b"PONG"
    client.close()


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(client):
    parent = client.call("CLIENT", "ID")
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its connection id, then exit without cleanup
        try:
            os.write(writing, str(client.call("CLIENT", "ID")).encode())
        finally:
            os._exit(0)
    os.close(writing)
    child = int(os.read(reading, 100))
    os.waitpid(pid, 0)
    os.close(reading)
    assert child != parent
    assert client.call("CLIENT", "ID") == parent


def test_a_script_flushed_from_the_server_is_loaded_again(client):
    script = Script("return ARGV[1] .. '!'", keys=0)
    assert client.run(script, [], ["hi"]) == b"hi!"
    client.call("SCRIPT", "FLUSH")
    assert client.run(script, [], ["again"]) == b"again!"


def test_a_script_takes_exactly_the_keys_it_declares(client):
    script = Script("return redis.call('GET', KEYS[1])", keys=1)
    client.call("SET", "lean:declared", b"v")
    assert client.run(script, ["lean:declared"], []) == b"v"
    for keys in ([], ["lean:declared", "lean:other"]):
        with pytest.raises(TypeError, match=f"declares 1 keys, {len(keys)} given"):
            client.run(script, keys, [])


def test_a_lease_has_one_owner_until_released_or_expired(client):
    assert client.try_lease("lean:lease", "one", 5)
    assert not client.try_lease("lean:lease", "two", 5)
    assert not client.release_lease("lean:lease", "two")  # never someone else's
    assert client.call("GET", "lean:lease") == b"one"
    assert client.release_lease("lean:lease", "one")
    assert client.try_lease("lean:lease", "two", 0.05)
    time.sleep(0.1)
    assert client.try_lease("lean:lease", "three", 5)  # the TTL ran out
    assert client.release_lease("lean:lease", "three")


def test_namespaces_name_the_keys_stored_so_far(client):
    sessions = client.namespace("s", "shop")
    assert (sessions.name, sessions.prefix) == ("scalekit:s:shop", "scalekit:s:shop:")
    assert client.namespace("m", "shop").name == "scalekit:m:shop"
    assert Namespace("c", "shop", hash_tag=True).prefix == "scalekit:c:{shop}:"


def test_options_come_from_the_url_and_keywords(redis_url):
    connector = open_redis(redis_url + "?socket_timeout=0.5&max_connections=3", max_connections=4)
    assert connector.topology.socket_timeout == 0.5
    assert connector.topology.max_connections == 4
    with pytest.raises(ConfigError, match="unknown option colour"):
        open_redis(redis_url, colour="blue")
    with pytest.raises(ConfigError, match="unknown option colour"):
        open_redis(parse(redis_url), colour="blue")


def test_commands_work_without_hiredis(redis_url):
    """A process where hiredis cannot be imported (the extra not installed): redis-py
    packs and parses the commands in Python."""
    program = f"""
import sys
sys.modules["hiredis"] = None  # as if the package were not installed: import fails
from scalekit.connect.redis import Script, lean, open_redis
assert lean.hiredis is None
client = open_redis({redis_url!r})
assert client.call("SET", "lean:plain", b"\\x00bytes", "EX", 60) == b"OK"
assert client.call("GET", "lean:plain") == b"\\x00bytes"
assert client.run(Script("return ARGV[1]", keys=0), [], ["python-packed"]) == b"python-packed"
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", program], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
