"""Failover of the Redis connector, on Sentinel and on Cluster, on groups of this module's own
(their servers are killed): with the primary killed under load, writes are served again
within 5 s, no write acknowledged by a replica (``WAIT``) is lost and the cache of reads
never disagrees with the server; a primary demoted while running (``READONLY``, ``MOVED``)
is left for the new one with no error; ``NotReplicated`` when no replica acknowledges."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import redis

from scalekit.connect.redis import NotReplicated, Script, open_redis
from tests.servers import RedisCluster, RedisSentinelGroup

SET = Script("return redis.call('SET', KEYS[1], ARGV[1])", keys=1)


@pytest.fixture(scope="module")
def sentinel_group():
    with RedisSentinelGroup().running() as group:
        yield group


@pytest.fixture(scope="module")
def cluster_group():
    """Its nodes fail a node silent for 1 s, as the Sentinels do (down-after 1 s)."""
    with RedisCluster(node_timeout_ms=1000).running() as group:
        yield group


@pytest.fixture(params=["sentinel", "cluster"])
def group(request):
    return request.getfixturevalue(f"{request.param}_group")


def killed(group, key: str):
    """The primary serving ``key`` SIGKILLed for the body, the group whole after it."""
    if isinstance(group, RedisCluster):
        return group.primary_killed(key)
    return group.primary_killed()


def replica_of(group, key: str):
    return group.serving(key)[1] if isinstance(group, RedisCluster) else group.replica()


def test_wait_acknowledges_and_a_stopped_replica_raises_not_replicated(group):
    connector = open_redis(group.url, socket_timeout=0.2)
    key = "{wait}key"
    assert connector.run(SET, [key], ["one"], replicas=1) == b"OK"
    with replica_of(group, key).frozen(), pytest.raises(NotReplicated, match="primary only"):
        # WAIT's reply may take its own timeout on top of the socket's
        connector.run(SET, [key], ["two"], replicas=1, replica_timeout=0.3)
    assert connector.call("GET", key) == b"two"  # done, on the primary only
    connector.close()


@pytest.mark.parametrize("hiredis", ["installed", "missing"])
def test_wait_with_no_replica_raises_not_replicated_after_its_own_timeout(redis_url, hiredis):
    """On both I/O paths (hiredis on the socket, redis-py's), WAIT's reply may take longer
    than the socket timeout; with no replica at all, none acknowledges."""
    program = f"""
import sys
if {hiredis == "missing"}:
    sys.modules["hiredis"] = None  # as if the package were not installed
from scalekit.connect.redis import NotReplicated, Script, open_redis
client = open_redis({redis_url!r}, socket_timeout=0.2)
script = Script("return redis.call('SET', KEYS[1], ARGV[1])", keys=1)
try:
    client.run(script, ["wait:alone"], ["v"], replicas=1, replica_timeout=0.3)
except NotReplicated as exc:
    print(exc, client.call("GET", "wait:alone"))
"""
    done = subprocess.run(
        [sys.executable, "-c", program], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.startswith("the write is on the primary only"), done.stderr
    assert done.stdout.endswith("b'v'\n")


def test_a_timed_out_command_is_not_run_again_unless_safe(sentinel_group):
    """It may have run (here: late, once the stopped primary runs again): only the caller
    knows whether running it twice is harmless."""
    connector = open_redis(sentinel_group.url, socket_timeout=0.2)
    connector.call("DEL", "timed-out")
    with sentinel_group.primary().frozen(), pytest.raises(redis.TimeoutError):
        connector.call("INCR", "timed-out")
    assert connector.call("GET", "timed-out", safe=True) == b"1"  # it ran, once
    connector.close()


def test_a_sentinel_primary_demoted_while_running_is_left_for_the_new_one(sentinel_group):
    connector = open_redis(sentinel_group.url, socket_timeout=2)
    connector.call("SET", "demoted", "before")
    assert connector.cached("demoted", "GET", "demoted", max_age=60) == b"before"
    old, new = sentinel_group.primary(), sentinel_group.replica()
    with redis.Redis(*sentinel_group.addresses[0]) as sentinel:
        sentinel.execute_command("SENTINEL", "FAILOVER", sentinel_group.service)
    deadline = time.monotonic() + 20
    while sentinel_group.named_primaries() != {new.port}:
        assert time.monotonic() < deadline, "the Sentinels did not fail over"
        time.sleep(0.05)
    with redis.Redis(port=old.port) as demoted:  # as Sentinel will, but keeping its clients
        demoted.replicaof("127.0.0.1", new.port)
        with pytest.raises(redis.ReadOnlyError):
            demoted.set("demoted", "lost")
    assert connector.call("SET", "demoted", "after") == b"OK"  # READONLY, then the new one
    with redis.Redis(port=new.port) as promoted:
        assert promoted.get("demoted") == b"after"
    assert connector.cached("demoted", "GET", "demoted", max_age=60) == b"after"
    sentinel_group.wait_settled(new)
    connector.close()


def test_a_cluster_primary_demoted_while_running_is_left_for_the_new_one(cluster_group):
    connector = open_redis(cluster_group.url, socket_timeout=2)
    key = "{demoted}key"
    connector.call("SET", key, "before")
    assert connector.cached(key, "GET", key, max_age=60) == b"before"
    new = cluster_group.serving(key)[1]
    with redis.Redis(port=new.port) as replica:
        replica.execute_command("CLUSTER", "FAILOVER")  # the old primary becomes its replica
    cluster_group.wait_promoted(new, key)
    assert connector.call("SET", key, "after") == b"OK"  # MOVED, then the new one
    with redis.Redis(port=new.port) as promoted:
        assert promoted.get(key) == b"after"
    assert connector.cached(key, "GET", key, max_age=60) == b"after"
    cluster_group.wait_formed()
    connector.close()


class Load:
    """Threads writing their own key (``SET``, then a script waiting for one replica) and
    reading it back through the cache and from the server, counting what they saw."""

    def __init__(self, connector, keys: list[str]):
        self.connector, self.keys = connector, keys
        self.acknowledged = dict.fromkeys(keys, 0)  # the last write a replica acknowledged
        self.served: dict[str, list[float]] = {key: [] for key in keys}  # times of writes run
        self.stale = self.reads = 0
        self.unexpected: list[BaseException] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.work, args=(key,)) for key in keys]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def work(self, key: str) -> None:
        connector, n = self.connector, 0
        while not self.stop.is_set():
            n += 1
            try:
                connector.call("SET", key, f"{n}", safe=True)
                self.served[key].append(time.monotonic())
                n += 1
                connector.run(SET, [key], [n], replicas=1, replica_timeout=0.2, safe=True)
                self.acknowledged[key] = n
            except redis.RedisError:
                pass  # down, moving, or not replicated: the caller's policy decides
            except BaseException as exc:  # noqa: BLE001 - a traceback that would reach a client
                self.unexpected.append(exc)
                return
            try:
                cached = connector.cached(key, "GET", key, max_age=60)
                actual = connector.call("GET", key, safe=True)
            except redis.RedisError:
                pass
            else:
                self.reads += 1
                self.stale += cached != actual
            time.sleep(0.005)

    def wait_served_after(self, moment: float, timeout: float) -> float:
        """Seconds from ``moment`` until every key had a write served after it."""
        deadline = moment + timeout
        while time.monotonic() < deadline:
            firsts = [
                next((t for t in times if t > moment), None) for times in self.served.values()
            ]
            if None not in firsts:
                return max(firsts) - moment
            time.sleep(0.02)
        raise AssertionError(f"writes not served again within {timeout}s of the kill")


def test_a_killed_primary_is_replaced_and_writes_are_served_again_within_5s(group, request):
    connector = open_redis(group.url, socket_timeout=1)
    keys = [f"load:{i}" for i in range(6)]  # on every primary of the Cluster
    load = Load(connector, keys)
    load.start()
    try:
        time.sleep(0.5)
        with killed(group, keys[0]):
            moment = time.monotonic()
            recovery = load.wait_served_after(moment, timeout=15)
            time.sleep(0.3)
    finally:
        load.finish()
    print(f"\n{request.node.callspec.id}: writes served again {recovery:.2f}s after the kill")
    assert not load.unexpected
    assert recovery < 5
    for key in keys:  # every write a replica acknowledged survived the failover
        assert int(connector.call("GET", key, safe=True)) >= load.acknowledged[key] > 0
    assert load.reads > 0 and load.stale == 0
    connector.close()
