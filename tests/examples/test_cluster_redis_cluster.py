"""`make cluster REDIS=cluster`: the demo on examples/redis-cluster/'s deploy, six nodes
started from its redis.conf (address, port, folder and password made local) and made one
Redis Cluster by its create-cluster.sh; every Redis user of the demo on ``redis+cluster://``.

The cluster starts once for the module; a primary is killed (SIGKILL) under load in the
third test, the next one runs on the promoted replica, the last one stops everything.
"""

from __future__ import annotations

import collections
import time

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from examples.cluster import Cluster, _gone
from scalekit.core import urls
from tests.examples.test_cluster import (
    command,
    read_only_is_obeyed_by_every_node,
    receipt_is_written_by_a_worker,
)
from tests.examples.test_cluster_sentinel import (
    every_redis_user_is_on,
    failover_under_load,
    flag_read_again,
    restarted_as_replica,
    started,
)

REDIS_NODES = {f"redis{number}" for number in range(1, 7)}
FAILOVER: dict[str, float] = {}  # see test_cluster_sentinel.FAILOVER


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from started(tmp_path_factory, "cluster")


def redis_client(cluster: Cluster) -> RedisCluster:
    settings = urls.parse(cluster.state["env"]["SCALEKIT_CACHE"])
    seeds = [ClusterNode(host, port) for host, port in settings.nodes]
    return RedisCluster(startup_nodes=seeds, password=settings.password)


def primaries(cluster: Cluster) -> set[str]:
    """The nodes (redis1...) that are primaries and not failing, as CLUSTER NODES says."""
    ports = {s["url"].rsplit(":", 1)[1]: s["name"] for s in cluster.state["servers"]}
    try:
        client = redis_client(cluster)
        try:
            nodes = client.cluster_nodes()
        finally:
            client.close()
    except redis.RedisError:  # the cluster is settling
        return set()
    return {ports[address.split("@")[0].rsplit(":", 1)[1]] for address, node in nodes.items()
            if "master" in node["flags"] and "fail" not in node["flags"]}  # fmt: skip


def test_six_nodes_from_the_example_make_three_primaries_with_a_replica_each(cluster):
    settings = urls.parse(cluster.state["env"]["SCALEKIT_CACHE"])
    host, port = settings.nodes[0]
    with pytest.raises(redis.AuthenticationError):  # requirepass holds
        redis.Redis(host=host, port=port).ping()
    client = redis_client(cluster)
    try:
        for number in range(90):
            client.set(f"key{number}", number)
        assert [int(client.get(f"key{number}")) for number in range(90)] == list(range(90))
        by_primary = collections.Counter(
            client.get_node_from_key(f"key{number}").name for number in range(90)
        )
        nodes = client.cluster_nodes().values()
    finally:
        client.close()
    assert len(by_primary) == 3 and min(by_primary.values()) > 15  # the slots are spread
    primaries = sorted(node["node_id"] for node in nodes if "master" in node["flags"])
    assert len(primaries) == 3
    assert sorted(node["master_id"] for node in nodes if "slave" in node["flags"]) == primaries


def test_every_redis_user_is_on_the_cluster_and_no_password_shows(cluster, capsys):
    every_redis_user_is_on(cluster, capsys, "redis+cluster://", REDIS_NODES)


def test_killing_a_primary_keeps_every_user_signed_in(cluster, capsys):
    before = primaries(cluster)
    victim = min(before)

    def promoted() -> bool:
        now = primaries(cluster)
        return len(now) == 3 and victim not in now

    FAILOVER["last failure"] = failover_under_load(
        cluster, capsys, victim, "Redis Cluster", promoted
    )
    assert len(primaries(cluster) - before) == 1  # the victim's replica


def test_restart_brings_the_killed_primary_back_as_a_replica(cluster, capsys):
    restarted_as_replica(cluster, capsys)
    # the node asked may list the old primary as one until gossip tells it otherwise
    deadline = time.monotonic() + 15
    while len(primaries(cluster)) != 3:
        assert time.monotonic() < deadline, f"primaries: {sorted(primaries(cluster))}"
        time.sleep(0.1)


def test_tasks_and_the_maintenance_flag_work_after_the_failover(cluster):
    receipt_is_written_by_a_worker(cluster)
    flag_read_again(FAILOVER)
    read_only_is_obeyed_by_every_node(cluster)


def test_stop_ends_the_six_nodes(cluster, capsys):
    pids = [s["pid"] for s in cluster.state["servers"] if s["name"] in REDIS_NODES]
    code, output = command(cluster, capsys, "stop")
    assert code == 0 and all(f"stopping {name} (pid" in output for name in REDIS_NODES)
    assert len(pids) == 6 and all(map(_gone, pids))
