"""examples/redis-cluster/ as shipped: six redis-server started from its redis.conf (address,
port, folder and password made local by ``examples.cluster``) become one Redis Cluster with
its create-cluster.sh, and serve keys from every primary."""

from __future__ import annotations

import collections
from urllib.parse import urlsplit

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from examples.cluster import Cluster, _gone


@pytest.fixture(scope="module")
def deploy(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("redis-cluster") / "state"), redis="cluster")
    url = cluster.start_redis()
    try:
        yield cluster, url
    finally:
        cluster.stop()


def test_six_nodes_from_the_example_make_three_primaries_with_a_replica_each(deploy):
    cluster, url = deploy
    address = urlsplit(url)
    seeds = [ClusterNode(*seed.split(":")) for seed in address.netloc.split("@")[1].split(",")]
    assert url.startswith("redis+cluster://") and len(seeds) == 6
    with pytest.raises(redis.AuthenticationError):  # requirepass holds
        redis.Redis(host=seeds[0].host, port=seeds[0].port).ping()
    client = RedisCluster(startup_nodes=seeds, password=address.password)
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
    assert {s["name"] for s in cluster.state["servers"]} == {f"redis{n}" for n in range(1, 7)}


def test_stop_ends_the_six_nodes(deploy):
    cluster, _ = deploy
    pids = [server["pid"] for server in cluster.state["servers"]]
    cluster.stop()
    assert all(map(_gone, pids))
