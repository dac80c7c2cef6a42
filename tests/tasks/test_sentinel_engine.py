"""The task engine on Redis behind Sentinels (``redis+sentinel://``): the conformance suite
and a failover under load.

:class:`TopologySuite` is the suite on one Redis topology opened by URL, and
:func:`failover_under_load` the failover scenario; the Cluster's tests
(:mod:`tests.tasks.test_cluster_engine`) use both.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import pytest
import redis

from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.tasks import Tasks, open_engine
from scalekit.testing import fresh_app_name
from scalekit.testing.tasks import Q, SharedTaskEngineSuite, ids
from tests.servers import RedisSentinelGroup, free_port
from tests.tasks import jobs
from tests.tasks.test_worker import SECRET, start_worker, stop, wait_for

#: The failover tests' queue.
QUEUE = "chaos"
#: Seconds the replica lags (frozen, its link cut) before its primary is killed.
LAG = 0.3
#: Seconds each task of the failover tests works (their worker runs fewer than are enqueued).
WORK = 0.01
#: Seconds a worker's lease lasts without a heartbeat.
LEASE = 2.0


class TopologySuite(SharedTaskEngineSuite):
    """The suite on the engine of the ``engine_url`` fixture (the conftest's ``make_engine``
    opens it); an unreachable engine is one of the ``down_url`` fixture. Each primary has
    one replica."""

    @pytest.fixture
    def engine_kind(self) -> str:
        return "redis"

    @pytest.fixture
    def make_unreachable_engine(self, down_url):
        opened = []

        def make(app_name):
            opened.append(open_engine(down_url, app_name, socket_connect_timeout=0.5))
            return opened[-1]

        yield make
        for engine in opened:
            engine.close()

    def test_an_enqueue_returns_once_min_replicas_have_the_task(self, engine_for):
        engine = engine_for(min_replicas=1)
        engine.enqueue(Q, "t1", b"x")
        engine.enqueue(Q, "t2", b"y", name="named")
        too_many = engine_for(min_replicas=2, replica_timeout=0.2)
        with pytest.raises(StoreUnavailable, match=r"on 2 replica\(s\) within 0.2s"):
            too_many.enqueue(Q, "t3", b"z")
        assert ids(engine.claim([Q], "w1", count=5)) == ["t1", "t2", "t3"]  # on the primary
        with pytest.raises(ConfigError, match="min_replicas"):
            engine_for(min_replicas=-1)


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

    def stop_after(self, moment: float) -> None:
        """Stop 0.3 s after the first enqueue started after ``moment`` returned."""
        if not self.stopping.is_set():
            wait_for(lambda: acked_since(self, moment), timeout=30)
            self.stopping.wait(0.3)
            self.stopping.set()

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


def failover_under_load(url: str, folder: str, min_replicas: int, shard) -> None:
    """Tasks of :data:`QUEUE` enqueued (on ``url``, a new app) by two threads while a worker
    process runs them (fewer than are enqueued: a backlog grows), and the primary SIGKILLed
    while its replica lags: caught up (``WAIT``), then frozen and its link cut for
    :data:`LAG` seconds, so the writes of that moment are on the primary only.
    ``shard(app)`` names them: ``(primary, replica, primary_killed)``, the last a context
    manager that kills the primary and after its body waits for the replica's promotion and
    brings the killed one back as its replica.

    Every task whose enqueue was acknowledged runs at least once, except those acknowledged
    in the lag (lost with the primary before the worker reached them): counted and printed
    (``pytest -s``), none with ``min_replicas=1`` (such an enqueue waits for the replica
    and fails instead)."""
    tasks = Tasks(url, fresh_app_name(), secret=SECRET, visibility_timeout=LEASE,
                  min_replicas=min_replicas)  # fmt: skip
    primary, replica, primary_killed = shard(tasks.app_name)
    worker = start_worker(tasks, queues=[QUEUE])
    try:
        with Load(tasks, folder, QUEUE).running() as load:
            wait_for(lambda: len(load.acked) >= 100)
            with redis.Redis(port=primary.port) as client:
                lag = time.monotonic()  # the writes after this may reach the primary only:
                client.set(f"{{{tasks.app_name}:{QUEUE}}}probe", 1)  # (in the queue's slot)
                assert client.wait(1, 5000) == 1  # the replica has every one before
                replica.freeze()
                client.client_kill_filter(_type="replica")
            time.sleep(LAG)
            with primary_killed():
                killed = time.monotonic()
                replica.thaw()
                if not min_replicas:  # (else no enqueue returns until the replica is back)
                    load.stop_after(killed)
            load.stop_after(killed)
        recovery = acked_since(load, killed) - killed
        acked = dict(load.acked)
        in_lag = {name for name, (start, end) in acked.items() if start <= killed and end >= lag}
        safe = set(acked) - in_lag  # every one of them runs
        wait_for(lambda: all(jobs.runs(folder, name) for name in safe), timeout=30)
        wait_for(lambda: sum(tasks.engine.counts()[QUEUE].values()) == 0)
    finally:
        stop(worker)
        tasks.close()
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


class TestSentinelEngine(TopologySuite):
    @pytest.fixture
    def engine_url(self, redis_sentinel) -> str:
        return redis_sentinel.url

    @pytest.fixture
    def down_url(self) -> str:
        return f"redis+sentinel://:hunter2@127.0.0.1:{free_port()}/scalekit/0"


@pytest.fixture(scope="module")
def sentinel_group():
    """A Sentinel group of this module's own: the failover tests kill its primary."""
    with RedisSentinelGroup().running() as group:
        yield group


@pytest.mark.parametrize("min_replicas", [0, 1])
def test_a_failover_under_load_loses_only_unreplicated_enqueues(
    sentinel_group, folder, min_replicas
):
    def shard(app: str):
        return sentinel_group.primary(), sentinel_group.replica(), sentinel_group.primary_killed

    failover_under_load(sentinel_group.url, folder, min_replicas, shard)
