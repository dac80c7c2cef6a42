"""``redis+cluster://`` URLs, and the connector on a real 6-node Redis Cluster: each command
goes to the node of its key, scripts run on hash-tagged keys, keys of different slots get a
clear error, a migrated slot (``MOVED``) and a migrating one (``ASK``) are followed, scans
and unlinks cover every primary, cached reads stay fresh, and a forked child has its own
connections."""

from __future__ import annotations

import os
import pickle

import pytest
import redis
import redis.cluster

from scalekit.connect.redis import Cluster, Script, open_redis
from scalekit.core import urls
from tests.servers import RedisCluster

GET_OTHER = Script("redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[2])", 2)


def test_a_cluster_url_names_its_seed_nodes():
    settings = urls.parse("redis+cluster://app:pw@n1:7000,n2,[::1]:7002?socket_timeout=0.5")
    assert isinstance(settings, urls.ClusterURL) and isinstance(settings, urls.RedisURL)
    assert settings.nodes == (("n1", 7000), ("n2", 6379), ("::1", 7002))
    assert (settings.username, settings.password, settings.db) == ("app", "pw", 0)
    assert dict(settings.options) == {"socket_timeout": "0.5"}
    assert "pw" not in repr(settings) and "pw" not in settings.masked
    assert urls.parse("redis+cluster://n1/0?db=0").db == 0


@pytest.mark.parametrize(
    ("alias", "scheme"),
    [("valkey+cluster://n1:7000,n2:7000", urls.ClusterURL),
     ("valkey+sentinel://s1,s2/app/1", urls.SentinelURL)],
)  # fmt: skip
def test_valkey_cluster_and_sentinel_are_aliases(alias, scheme):
    settings = urls.parse(alias, kinds={"redis"})
    assert isinstance(settings, scheme)
    assert settings == urls.parse(alias.replace("valkey", "redis"))
    assert settings.masked.startswith("valkey+")


@pytest.fixture
def cluster(redis_cluster):
    connector = open_redis(f"redis+cluster://{redis_cluster[0]}", socket_timeout=2)
    yield connector
    connector.close()


def node_client(address: bytes | str) -> redis.Redis:
    host, port = (address.decode() if isinstance(address, bytes) else address).rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), socket_timeout=2)


def moved_replies(seeds) -> int:
    """How many MOVED replies every node has sent so far (``INFO errorstats``)."""
    total = 0
    for seed in seeds:
        with node_client(seed) as node:
            total += node.info("errorstats").get("errorstat_MOVED", {}).get("count", 0)
    return total


def test_a_cluster_url_opens_a_connector_that_routes_and_tags(cluster):
    assert isinstance(cluster.topology, Cluster)
    assert cluster.topology.hash_tags and cluster.topology.routes
    assert cluster.namespace("s", "shop").prefix == "scalekit:s:{shop}:"
    assert isinstance(cluster.client, redis.cluster.RedisCluster)
    assert cluster.call("PING") == b"PONG"


def test_each_command_goes_to_the_node_of_its_key(cluster, redis_cluster):
    cluster.call("SET", "route:warm", "x")
    before = moved_replies(redis_cluster)
    for i in range(300):
        cluster.call("SET", f"route:{i}", i)
    cluster.call("XADD", "route:stream", "*", "f", "v")
    cluster.call("XGROUP", "CREATE", "route:stream", "g", "0")
    [[stream, [[_, fields]]]] = cluster.call(
        "XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "route:stream", ">"
    )
    assert (stream, fields) == (b"route:stream", [b"f", b"v"])
    assert cluster.run(GET_OTHER, ["{route}a", "{route}b"], ["1"]) is None
    assert moved_replies(redis_cluster) == before  # no command went to a wrong node
    holders = set()
    for i in range(300):
        with node_client(redis_cluster[0]) as seed:
            owner = seed.execute_command("CLUSTER", "SLOTS")
            slot = seed.execute_command("CLUSTER", "KEYSLOT", f"route:{i}")
        [(host, port)] = [(r[2][0], r[2][1]) for r in owner if r[0] <= slot <= r[1]]
        with node_client(f"{host.decode()}:{port}") as node:
            assert node.get(f"route:{i}") == str(i).encode()
        holders.add(port)
    assert len(holders) == 3  # the keys spread over every primary
    cluster.unlink([*(f"route:{i}" for i in range(300)), "route:warm", "route:stream"])


def test_a_script_runs_on_hash_tagged_keys_and_is_loaded_where_missing(cluster, redis_cluster):
    cluster.call("SET", "{cart:7}:total", "41")
    assert cluster.run(GET_OTHER, ["{cart:7}:item", "{cart:7}:total"], ["book"]) == b"41"
    for seed in redis_cluster:
        with node_client(seed) as node:
            node.script_flush()
    assert cluster.run(GET_OTHER, ["{cart:7}:total", "{cart:7}:item"], ["42"]) == b"book"
    assert cluster.call("GET", "{cart:7}:total") == b"42"
    assert cluster.run(GET_OTHER, ["{cart:7}:a", "{cart:7}:b"], ["x"], replicas=1) is None
    cluster.unlink(["{cart:7}:total", "{cart:7}:item", "{cart:7}:a"])


def test_keys_of_different_slots_get_a_clear_error(cluster):
    with pytest.raises(redis.exceptions.ClusterCrossSlotError, match="hash tag"):
        cluster.run(GET_OTHER, ["cross:a", "cross:b"], ["v"])
    with pytest.raises(redis.exceptions.ClusterCrossSlotError, match="hash tag"):
        cluster.call("MGET", "cross:a", "cross:b")
    assert cluster.call("MGET", "{cross}a", "{cross}b") == [None, None]


def test_scan_and_unlink_cover_every_primary(cluster):
    keys = [f"sweep:{i}".encode() for i in range(500)]
    for key in keys:
        cluster.call("SET", key, "v")
    cluster.call("SET", "other:1", "v")
    assert sorted(cluster.scan("sweep:*", count=50)) == sorted(keys)
    assert cluster.unlink([*keys, b"sweep:never-written"]) == len(keys)
    assert list(cluster.scan("sweep:*")) == []
    assert cluster.unlink(["other:1"]) == 1


def test_cached_reads_on_a_cluster_see_every_write(cluster, redis_cluster):
    writer = redis.cluster.RedisCluster(host=redis_cluster[0].split(":")[0],
                                        port=int(redis_cluster[0].split(":")[1]))  # fmt: skip
    keys = [f"cached:{i}" for i in range(12)]  # on every primary
    try:
        for key in keys:
            writer.set(key, "old")
            assert cluster.cached(key, "GET", key, max_age=60) == b"old"
        for key in keys:
            writer.set(key, "new")
        for key in keys:
            for _ in range(100):  # the invalidation arrives on its own link, soon after
                if cluster.cached(key, "GET", key, max_age=60) == b"new":
                    break
            assert cluster.cached(key, "GET", key, max_age=60) == b"new"
        cluster.call("SET", keys[0], "mine")
        cluster.forget(keys[0])
        assert cluster.cached(keys[0], "GET", keys[0], max_age=60) == b"mine"
    finally:
        writer.delete(*keys)
        writer.close()


def test_a_forked_child_uses_its_own_connections(cluster):
    cluster.call("SET", "fork:a", "parent")
    assert cluster.cached("fork:a", "GET", "fork:a", max_age=60) == b"parent"
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write, read and report, then exit without cleanup
        try:
            cluster.call("SET", "fork:b", "child")
            seen = [cluster.call("GET", "fork:a"), cluster.cached("fork:b", "GET", "fork:b",
                                                                  max_age=60)]  # fmt: skip
            os.write(writing, pickle.dumps(seen))
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading, "rb") as pipe:
        seen = pickle.loads(pipe.read())
    os.waitpid(pid, 0)
    assert seen == [b"parent", b"child"]
    assert cluster.call("GET", "fork:b") == b"child"
    assert cluster.cached("fork:a", "GET", "fork:a", max_age=60) == b"parent"
    cluster.unlink(["fork:a", "fork:b"])


# -- slot migration: a cluster of this module's own, since slots move --------------------------
@pytest.fixture(scope="module")
def moving_cluster():
    with RedisCluster().running() as group:
        yield group


class Migration:
    """Move ``slot`` from the node that holds it to another primary, by hand (as
    ``redis-cli --cluster reshard`` does): :meth:`begin` marks it importing and migrating,
    :meth:`move_keys` migrates its keys, :meth:`finish` gives it to the target."""

    def __init__(self, seeds, slot: int):
        self.slot = slot
        with node_client(seeds[0]) as seed:
            ranges = seed.execute_command("CLUSTER", "SLOTS")
        primaries = {(r[2][1], r[2][2]) for r in ranges}
        self.source = next((r[2][1], r[2][2]) for r in ranges if r[0] <= slot <= r[1])
        self.target = next(p for p in sorted(primaries) if p != self.source)
        self.primaries = primaries

    def node(self, which) -> redis.Redis:
        return node_client(f"127.0.0.1:{which[0]}")

    def begin(self) -> None:
        with self.node(self.target) as target:
            target.execute_command("CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.source[1])
        with self.node(self.source) as source:
            source.execute_command("CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.target[1])

    def move_keys(self) -> None:
        with self.node(self.source) as source:
            keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, 1000)
            if keys:
                source.execute_command(
                    "MIGRATE", "127.0.0.1", self.target[0], "", 0, 2000, "KEYS", *keys
                )

    def finish(self) -> None:
        for primary in self.primaries:
            with self.node(primary) as node:
                node.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", self.target[1])


def test_a_moved_slot_is_followed_to_its_new_node(moving_cluster):
    connector = open_redis(f"redis+cluster://{moving_cluster.seeds[0]}", socket_timeout=2)
    connector.call("SET", "{moved}a", "before")
    assert connector.cached("{moved}a", "GET", "{moved}a", max_age=60) == b"before"
    with node_client(moving_cluster.seeds[0]) as seed:
        slot = seed.execute_command("CLUSTER", "KEYSLOT", "{moved}a")
    migration = Migration(moving_cluster.seeds, slot)
    migration.begin()
    migration.move_keys()
    migration.finish()
    assert connector.call("GET", "{moved}a") == b"before"  # MOVED, then the new node
    connector.call("SET", "{moved}a", "after")
    assert connector.cached("{moved}a", "GET", "{moved}a", max_age=60) == b"after"
    with migration.node(migration.target) as target:
        assert target.get("{moved}a") == b"after"
    connector.close()


def test_a_migrating_slot_is_followed_with_asking(moving_cluster):
    connector = open_redis(f"redis+cluster://{moving_cluster.seeds[0]}", socket_timeout=2)
    connector.call("SET", "{asked}stays", "on the source")
    with node_client(moving_cluster.seeds[0]) as seed:
        slot = seed.execute_command("CLUSTER", "KEYSLOT", "{asked}stays")
    migration = Migration(moving_cluster.seeds, slot)
    migration.begin()
    # a key still on the source is served there; a new one goes to the target (ASK)
    assert connector.call("GET", "{asked}stays") == b"on the source"
    for key in ("{asked}new", "{asked}new2"):
        assert connector.call("SET", key, "on the target") == b"OK"
    assert connector.call("GET", "{asked}new") == b"on the target"
    assert connector.run(GET_OTHER, ["{asked}new2", "{asked}new"], ["x"]) == b"on the target"
    # keys split between the nodes: TRYAGAIN until the migration ends, then an error
    impatient = open_redis(f"redis+cluster://{moving_cluster.seeds[0]}", socket_timeout=0.2)
    with pytest.raises(redis.exceptions.TryAgainError):
        impatient.run(GET_OTHER, ["{asked}stays", "{asked}new"], ["x"])
    impatient.close()
    migration.move_keys()
    migration.finish()
    assert connector.call("GET", "{asked}stays") == b"on the source"
    assert connector.call("GET", "{asked}new2") == b"x"
    connector.close()
