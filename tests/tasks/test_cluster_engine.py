"""The task engine on a Redis Cluster (``redis+cluster://``): the conformance suite, a
claim and a worker over queues on every primary, and failovers under load.

Failover: tasks are enqueued by two threads while a worker process runs them, and the
primary of the queue's slot is SIGKILLed while its replica lags (frozen, its replication
link cut for :data:`LAG` seconds: the writes of that moment are on the primary only). The
replica takes over; the killed node comes back as its replica. Every task whose enqueue was
acknowledged runs at least once, except those acknowledged in the lag, lost with the old
primary before the worker reached them (it runs fewer tasks than are enqueued: a backlog):
counted and printed (``pytest -s``), and none with ``min_replicas=1``, where such an enqueue
waits for the replica and fails instead.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import pytest
import redis

from scalekit.core.errors import StoreUnavailable
from scalekit.tasks import Tasks
from scalekit.testing import fresh_app_name
from tests.servers import RedisCluster, free_port
from tests.tasks import jobs
from tests.tasks.test_sentinel_engine import TopologySuite
from tests.tasks.test_worker import SECRET, start_worker, stop, wait_for

#: The failover tests' queue.
QUEUE = "chaos"
#: Seconds the replica lags (frozen, its link cut) before its primary is killed.
LAG = 0.3
#: Seconds each task of the failover tests works (their worker runs fewer than are enqueued).
WORK = 0.01
#: Seconds a worker's lease lasts without a heartbeat.
LEASE = 2.0


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
    """A cluster of this module's own: the failover tests kill its nodes."""
    with RedisCluster().running() as started:
        yield started


@dataclass
class Load:
    """Two threads enqueuing tasks of ``queue`` until stopped: ``acked`` task names with
    when their enqueue started and returned, ``refused`` the enqueues that raised."""

    tasks: Tasks
    folder: str
    queue: str
    acked: dict[str, tuple[float, float]] = field(default_factory=dict)
    refused: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self, thread: int) -> None:
        for number in range(1_000_000):
            if self.stopping.wait(0.005):
                return
            name, started = f"{thread}-{number}", time.monotonic()
            try:
                self.tasks.defer(jobs.slow, self.folder, name, WORK, _queue=self.queue)
            except StoreUnavailable:
                self.refused += 1
                self.stopping.wait(0.05)
                continue
            self.acked[name] = started, time.monotonic()

    @contextlib.contextmanager
    def running(self):
        threads = [threading.Thread(target=self.run, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stopping.set()
            for thread in threads:
                thread.join(10)


def acked_since(load: Load, moment: float) -> float | None:
    """When the first enqueue started after ``moment`` returned, if one did."""
    return min((end for start, end in list(load.acked.values()) if start > moment), default=None)


@pytest.mark.parametrize("min_replicas", [0, 1])
def test_a_failover_under_load_loses_only_unreplicated_enqueues(cluster, folder, min_replicas):
    tasks = Tasks(cluster.url, fresh_app_name(), secret=SECRET, visibility_timeout=LEASE,
                  min_replicas=min_replicas)  # fmt: skip
    key = f"{{{tasks.app_name}:{QUEUE}}}"  # the queue's hash tag: its slot
    primary, replica = wait_for(lambda: (shard := cluster.serving(key))[1] and shard)
    worker = start_worker(tasks, queues=[QUEUE])  # slower than the load: a backlog grows
    try:
        with Load(tasks, folder, QUEUE).running() as load:
            wait_for(lambda: len(load.acked) >= 100)
            lag = time.monotonic()  # the writes after this may reach the primary only
            replica.freeze()  # (what it has not read when its link is cut may never be)
            with redis.Redis(port=primary.port) as client:
                client.client_kill_filter(_type="replica")
            time.sleep(LAG)
            with cluster.primary_killed(key):  # then back as the promoted replica's replica
                killed = time.monotonic()
                replica.thaw()
            recovery = wait_for(lambda: acked_since(load, killed), timeout=30) - killed
            time.sleep(0.3)
        acked = dict(load.acked)
        in_lag = {name for name, (start, end) in acked.items() if start <= killed and end >= lag}
        safe = set(acked) - in_lag  # every one of them runs
        wait_for(lambda: all(jobs.runs(folder, name) for name in safe), timeout=30)
        wait_for(lambda: sum(tasks.engine.counts()[QUEUE].values()) == 0)
        runs = {name: len(jobs.runs(folder, name)) for name in acked}
        lost = {name for name, count in runs.items() if not count}
        print(
            f"\nmin_replicas={min_replicas}: {len(acked)} enqueues acknowledged, "
            f"{load.refused} refused, {len(in_lag)} acknowledged while the replica lagged "
            f"({killed - lag:.2f} s); {len(lost)} lost, "
            f"{sum(count > 1 for count in runs.values())} ran twice; the first enqueue "
            f"acknowledged {recovery:.2f} s after the kill"
        )
        assert lost <= in_lag  # only what the replica never had
        if min_replicas:
            assert not lost
    finally:
        stop(worker)
        tasks.close()
