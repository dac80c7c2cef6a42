"""What the Redis and memcache backends add to the conformance suite: odd and long keys
(hashed), counters on every path, clear without KEYS/FLUSHDB, options from the URL."""

from __future__ import annotations

import re
import time

import pytest
import redis
from pymemcache.client.base import Client

from scalekit import sessions
from scalekit.cache import open_backend
from scalekit.core.errors import ConfigError, SerializationError
from tests.cache.conftest import backend_url_for
from tests.servers import MemcachedServer, RedisServer

ODD_KEYS = ["with space", "ctrl\x01char", "ünïcode", "tab\there", "long:" + "x" * 600]


@pytest.fixture(params=["memcache", "redis"])
def backend(request, tmp_path, app_name):
    opened = open_backend(backend_url_for(request.param, request, tmp_path), app_name=app_name)
    yield opened
    opened.close()


def test_odd_and_long_keys_count_and_clear_by_regex(backend):
    for key in ODD_KEYS:
        assert backend.incr(key, 2) == 2
        assert backend.incr(key, -5) == -3
        assert backend.get(key).value == -3
    backend.set("with space too", "v", 60)
    backend.set("long:" + "y" * 600, "v", 60)
    backend.set("kept", "v", 60)
    assert backend.clear(re.compile(r"with space|long:")) == 4
    assert backend.get("with space") is None and backend.get("long:" + "x" * 600) is None
    assert backend.get("ünïcode").value == -3 and backend.get("kept").value == "v"
    assert backend.clear() == 4


def test_counters_below_zero_and_on_stored_ints(backend):
    assert backend.incr("n", -1) == -1
    assert backend.incr("n", 0) == -1
    backend.set("m", -10, 60)
    assert backend.incr("m", 3) == -7
    assert backend.get("m").value == -7
    backend.set("big", 2**70, 60)
    assert backend.get("big").value == 2**70
    if backend.kind == "redis":  # HINCRBY counts in 64 bits
        with pytest.raises(ValueError, match="'big'"):
            backend.incr("big")
    else:  # a stored int outside 64 bits counts with gets/cas, in Python
        assert backend.incr("big") == 2**70 + 1
    with pytest.raises(TypeError):
        backend.incr("n", 1.5)


def test_an_increment_keeps_the_ttl_and_an_expired_entry_starts_at_zero(backend):
    backend.set("m", 10, 0.5)
    assert backend.incr("m") == 11
    time.sleep(0.7)
    assert backend.get("m") is None
    assert backend.incr("m") == 1  # expired: starts again at 0
    backend.set("text", "old", 0.3)
    time.sleep(0.4)
    assert backend.incr("text") == 1
    assert backend.add("text", "new", 60) is False
    backend.set("gone", "v", 0.3)
    time.sleep(0.4)
    assert backend.add("gone", "new", 60) is True  # an expired entry does not block add
    assert backend.get("gone").value == "new"


def test_options_come_from_the_url(request, tmp_path, app_name):
    for kind in ("memcache", "redis"):
        url = backend_url_for(kind, request, tmp_path)
        timeout = "socket_timeout" if kind == "redis" else "timeout"
        opened = open_backend(
            f"{url}?serializer=pickle&{timeout}=0.5", app_name=app_name, secret="s" * 32
        )
        opened.set("k", {"x": object.__name__}, 60)
        assert opened.serializer == "pickle" and opened.get("k").value == {"x": "object"}
        opened.close()
        with pytest.raises(ConfigError, match="bogus"):
            open_backend(url + "?bogus=1", app_name=app_name)


def test_memcache_refuses_values_over_its_item_size(request, tmp_path, app_name):
    url = backend_url_for("memcache", request, tmp_path)
    backend = open_backend(url + "?max_value_size=1000", app_name=app_name)
    with pytest.raises(SerializationError, match="'big-key'"):
        backend.set("big-key", "x" * 2000, 60)
    backend.set("small", "x" * 100, 60)
    assert backend.get("small").value == "x" * 100


def test_memcache_spreads_keys_over_both_nodes(request, tmp_path, app_name):
    backend = open_backend(backend_url_for("memcache", request, tmp_path), app_name=app_name)
    for index in range(40):
        backend.set(f"k{index}", index, 60)
    per_node = [stats["curr_items"] for stats in backend.server_stats().values()]
    assert len(per_node) == 2 and all(count > 0 for count in per_node)
    assert backend.clear() == 40


def test_memcache_counts_in_slabs_an_older_item_left_minus_signs_in(app_name):
    """memcached (1.6.18) refuses to ``incr`` a number of 2**63 or more as "non-numeric" when
    the bytes after it in its slab chunk, left by a deleted item, hold a ``-``: counters stay
    below 2**63, and a bare number it refuses (the former ``n + 2**63``) becomes a record."""
    with MemcachedServer().running() as server:
        raw = Client(("127.0.0.1", server.port), default_noreply=False)
        backend = open_backend(f"memcache://{server.address}", app_name=app_name)

        def litter():  # deleted items of the counters' size, full of minus signs
            names = [f"scalekit:c:{app_name}:v:g{index:03d}" for index in range(200)]
            for name in names:
                raw.set(name, b"-" * 24)
            raw.delete_many(names)

        litter()
        assert [backend.incr("n") for _ in range(3)] == [1, 2, 3]
        assert backend.incr("n", -5) == -2 and backend.get("n").value == -2
        litter()
        former = f"scalekit:c:{app_name}:v:m"
        raw.set(former, str(2**63 + 5).encode(), flags=int(time.time()))
        assert backend.get("m").value == 5
        assert [backend.incr("m") for _ in range(3)] == [6, 7, 8]
        assert backend.get("m").value == 8
        backend.close()
        raw.close()


def test_redis_clear_uses_scan_and_leaves_other_apps_and_sessions_alone(app_name):
    with RedisServer().running() as server:
        client = redis.Redis.from_url(server.url)
        mine = open_backend(server.url, app_name=app_name)
        theirs = open_backend(server.url, app_name=app_name + "x")
        store = sessions.open_store(server.url, app_name=app_name)
        store.save("s" * 32, b"payload", 60, None)
        for index in range(2500):  # more than one SCAN batch
            mine.set(f"user:{index}", index, 60)
        mine.set("page", "p", 60)
        mine.try_lease("user:1", "holder", 30)
        theirs.set("user:1", "theirs", 60)
        client.config_resetstat()
        assert mine.clear(re.compile("user:")) == 2500
        assert mine.clear() == 1
        used = {name.removeprefix("cmdstat_") for name in client.info("commandstats")}
        assert "scan" in used and not used & {"keys", "flushdb", "flushall"}
        assert theirs.get("user:1").value == "theirs"
        assert store.load("s" * 32).data == b"payload"
        assert mine.try_lease("user:1", "other", 30) is False  # leases are not entries
        for opened in (mine, theirs, store):
            opened.close()
        client.close()
