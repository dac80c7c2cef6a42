"""The task engine conformance suite on Redis behind Sentinels (``redis+sentinel://``)."""

from __future__ import annotations

import pytest

from scalekit.tasks import open_engine
from scalekit.testing import fresh_app_name
from scalekit.testing.tasks import SharedTaskEngineSuite
from tests.servers import free_port


class TestSentinelEngine(SharedTaskEngineSuite):
    @pytest.fixture
    def make_engine(self, redis_sentinel):
        opened = []

        def make(app_name=None, **options):
            options.setdefault("visibility_timeout", 5.0)
            opened.append(open_engine(redis_sentinel.url, app_name or fresh_app_name(), **options))
            return opened[-1]

        yield make
        for engine in opened:
            engine.close()

    @pytest.fixture
    def make_unreachable_engine(self):
        url = f"redis+sentinel://:hunter2@127.0.0.1:{free_port()}/scalekit/0"
        opened = []

        def make(app_name):
            opened.append(open_engine(url, app_name, socket_connect_timeout=0.5))
            return opened[-1]

        yield make
        for engine in opened:
            engine.close()
