"""The Redis cache on a Redis Cluster (``redis+cluster://``): the shared cache semantics,
one app's entries spread over every primary (no hot shard), ``clear`` on every primary,
single flight across processes, each primary's stats, and a primary's failover."""

from __future__ import annotations

import re

import pytest
import redis

from scalekit.cache import CacheModel, open_backend
from scalekit.testing import fresh_app_name
from scalekit.testing.cache import SharedCacheBackendSuite
from tests.cache.test_single_flight import (  # noqa: F401 (run here again, on the Cluster)
    test_32_workers_in_threads_and_processes_run_f_once,
)
from tests.servers import RedisCluster


@pytest.fixture(scope="module")
def cluster_url(redis_cluster) -> str:
    return "redis+cluster://" + ",".join(redis_cluster)


@pytest.fixture
def backend_url(cluster_url) -> str:
    """The URL the cache conftest's models open (the single-flight test's)."""
    return cluster_url


@pytest.fixture(scope="module")
def primaries(redis_cluster) -> dict[str, redis.Redis]:
    """A client of each primary, by ``host:port``."""
    cluster = redis.RedisCluster.from_url(f"redis://{redis_cluster[0]}")
    found = {f"{node.host}:{node.port}": node for node in cluster.get_primaries()}
    yield {where: redis.Redis(host=node.host, port=node.port) for where, node in found.items()}
    cluster.close()


def keys_on(primaries: dict[str, redis.Redis], match: str) -> dict[str, set[bytes]]:
    """The keys matching ``match`` on each primary."""
    return {where: set(client.scan_iter(match, count=1000)) for where, client in primaries.items()}


class TestClusterBackend(SharedCacheBackendSuite):
    @pytest.fixture
    def make_backend(self, cluster_url):
        return lambda app_name: open_backend(cluster_url, app_name=app_name)


@pytest.fixture
def backend(cluster_url):
    opened = open_backend(cluster_url, app_name=fresh_app_name())
    yield opened
    opened.clear()
    opened.close()


def test_one_apps_entries_spread_over_every_primary(backend, primaries):
    for index in range(1000):
        backend.set(f"item:{index}", index, 60)
    found = keys_on(primaries, f"scalekit:c:{backend.app_name}:*")
    assert len(found) == 3
    assert sum(map(len, found.values())) == 1000
    assert min(map(len, found.values())) > 200  # about a third each: no hot shard
    stats = backend.server_stats()  # each primary's, by host:port
    assert set(stats) == set(primaries)
    assert all(stats[where]["db_keys"] >= len(found[where]) for where in primaries)
    assert all("redis_version" in node for node in stats.values())


def test_clear_by_regex_removes_matches_on_every_primary_and_nothing_else(
    cluster_url, backend, primaries
):
    other = open_backend(cluster_url, app_name=backend.app_name + "x")
    long = "x" * 300  # keys over 200 bytes are stored hashed, the key in a field
    for index in range(300):
        backend.set(f"user:{index}", index, 60)
        backend.set(f"page:{index}", index, 60)
        other.set(f"user:{index}", index, 60)
    for index in range(5):
        backend.set(f"user:{long}{index}", index, 60)
        backend.set(f"page:{long}{index}", index, 60)
    assert backend.try_lease("user:1", "owner", 30)
    mine = f"scalekit:c:{backend.app_name}:[vh]:*"
    before = keys_on(primaries, mine)
    assert all(len(names) > 100 for names in before.values())
    pages = {  # on each primary: the entries of keys that do not match
        where: {name for name in names if _key_of(primaries[where], name).startswith("page:")}
        for where, names in before.items()
    }

    assert backend.clear(re.compile("user:")) == 305
    after = keys_on(primaries, mine)
    assert after == pages
    assert sum(map(len, after.values())) == 305
    assert other.get("user:1").value == 1 and backend.get("page:1").value == 1
    assert backend.try_lease("user:1", "other", 30) is False  # leases are no entries

    assert backend.clear() == 305
    assert keys_on(primaries, mine) == {where: set() for where in primaries}
    assert other.clear() == 300
    other.close()


def _key_of(client: redis.Redis, name: bytes) -> str:
    """The cache key an entry is stored for (a hashed one's is in its field ``k``)."""
    _, _, _, kind, key = name.split(b":", 4)
    return (client.hget(name, "k") if kind == b"h" else key).decode()


def test_a_killed_primary_costs_only_its_keys_and_only_until_the_promotion():
    """With a primary SIGKILLed, the keys it served fail open (computed, no error reaches
    the caller) and every other key is served from the cache; after its replica took
    over, its keys are cached again."""
    with RedisCluster().running() as cluster:
        model = CacheModel(open_backend(cluster.url, app_name=fresh_app_name()))
        keys = [f"k{index}" for index in range(30)]
        for key in keys:
            model.set(key, "cached", 600)
        name = f"scalekit:c:{model.backend.app_name}:v:%s"
        victim = cluster.serving(name % keys[0])[0]
        lost = {key for key in keys if cluster.serving(name % key)[0] is victim}
        with cluster.primary_killed(name % keys[0]):
            answers = {key: model(key, lambda: "computed", 600) for key in keys}
        assert {key for key, answer in answers.items() if answer == "computed"} == lost
        assert 0 < len(lost) < len(keys) and model.stats()["errors"] >= len(lost)
        for key in lost:
            model.set(key, "again", 600)
            assert model(key, lambda: "computed", 600) == "again"
        model.backend.close()
