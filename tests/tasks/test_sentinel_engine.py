"""The task engine conformance suite on Redis behind Sentinels (``redis+sentinel://``).

:class:`TopologySuite` is the suite on one Redis topology opened by URL; the Cluster's
(:mod:`tests.tasks.test_cluster_engine`) is one too.
"""

from __future__ import annotations

import pytest

from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.tasks import open_engine
from scalekit.testing.tasks import Q, SharedTaskEngineSuite, ids
from tests.servers import free_port


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


class TestSentinelEngine(TopologySuite):
    @pytest.fixture
    def engine_url(self, redis_sentinel) -> str:
        return redis_sentinel.url

    @pytest.fixture
    def down_url(self) -> str:
        return f"redis+sentinel://:hunter2@127.0.0.1:{free_port()}/scalekit/0"
