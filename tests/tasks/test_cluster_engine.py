"""The task engine on a Redis Cluster (``redis+cluster://``): the conformance suite, a
claim and a worker over queues on every primary, and a failover under load of the primary
of a queue's slot (:func:`~tests.tasks.test_sentinel_engine.failover_under_load`).
"""

from __future__ import annotations

import contextlib
import threading

import pytest
import redis

from scalekit.tasks import Tasks
from scalekit.testing import fresh_app_name
from tests.servers import RedisCluster, free_port
from tests.tasks import jobs
from tests.tasks.test_sentinel_engine import LEASE, QUEUE, TopologySuite, failover_under_load
from tests.tasks.test_worker import SECRET, start_worker, wait_for


class TestClusterEngine(TopologySuite):
    @pytest.fixture
    def engine_url(self, redis_cluster) -> str:
        return "redis+cluster://" + ",".join(redis_cluster)

    @pytest.fixture
    def down_url(self) -> str:
        return f"redis+cluster://:hunter2@127.0.0.1:{free_port()}"


def queues_on_each_primary(seeds, app: str) -> list[str]:
    """One queue name per primary, each holding its slot on another primary."""
    host, port = seeds[0].split(":")
    with redis.cluster.RedisCluster(host=host, port=int(port)) as client:
        found: dict[str, str] = {}
        for name in (f"q{number}" for number in range(1000)):
            found.setdefault(client.get_node_from_key(f"{{{app}:{name}}}").name, name)
            if len(found) == len(client.get_primaries()):
                return list(found.values())
    raise AssertionError("no queue name found on some primary")


@pytest.fixture
def tasks(redis_cluster):
    made = Tasks("redis+cluster://" + ",".join(redis_cluster), fresh_app_name(), secret=SECRET,
                 visibility_timeout=LEASE)  # fmt: skip
    yield made
    made.close()


def test_one_claim_takes_queues_on_every_primary_in_order_and_waits_on_all(tasks, redis_cluster):
    engine = tasks.engine
    queues = queues_on_each_primary(redis_cluster, tasks.app_name)
    for queue in reversed(queues):
        engine.enqueue(queue, f"in-{queue}", b"x")
    claimed = engine.claim(queues, "w1", count=len(queues))
    assert [claim.task_id for claim in claimed] == [f"in-{queue}" for queue in queues]
    for claim in claimed:
        engine.ack(claim)
    later = threading.Timer(0.3, lambda: engine.enqueue(queues[-1], "late", b"y"))
    later.start()
    [claim] = engine.claim(queues, "w1", wait=5)
    later.join()
    assert (claim.queue, claim.task_id) == (queues[-1], "late")
    assert engine.counts() == {
        queue: {"waiting": 0, "delayed": 0, "running": int(queue == queues[-1]), "dead": 0}
        for queue in queues
    }
    assert engine.purge(queues[-1]) == 1


def test_a_worker_runs_the_tasks_of_queues_on_every_primary(tasks, redis_cluster, folder):
    queues = queues_on_each_primary(redis_cluster, tasks.app_name)
    names = [f"{queue}-{number}" for queue in queues for number in range(10)]
    for name in names:
        tasks.defer(jobs.done, folder, name, _queue=name.split("-")[0])
    process = start_worker(tasks, queues=queues, concurrency=2, burst=True)
    process.join(30)
    assert process.exitcode == 0
    assert [len(jobs.runs(folder, name)) for name in names] == [1] * len(names)
    assert all(sum(counts.values()) == 0 for counts in tasks.engine.counts().values())


# -- failover under load --------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """A cluster of this module's own (the failover tests kill its nodes), quick to fail over
    (node timeout 1 s, as the Sentinels' down-after)."""
    with RedisCluster(node_timeout_ms=1000).running() as started:
        yield started


@pytest.mark.parametrize("min_replicas", [0, 1])
def test_a_failover_under_load_loses_only_unreplicated_enqueues(cluster, folder, min_replicas):
    def shard(app: str):
        key = f"{{{app}:{QUEUE}}}"  # the queue's hash tag: its slot
        primary, replica = wait_for(lambda: (nodes := cluster.serving(key))[1] and nodes)

        @contextlib.contextmanager
        def primary_killed():  # cluster.primary_killed(key) would ask the frozen replica
            primary.kill()
            try:
                yield
            finally:
                cluster.wait_promoted(replica, key)
                primary.restart()
                cluster.wait_formed()

        return primary, replica, primary_killed

    failover_under_load(cluster.url, folder, min_replicas, shard)
