"""The session store protocol on Redis behind Sentinels (``redis+sentinel://``), with and
without the client cache (a failover under load: test_redis_failover.py)."""

from __future__ import annotations

import pytest

from scalekit.sessions.stores import open_store
from scalekit.testing.sessions import SharedSessionStoreSuite
from tests.servers import free_port


class TestSentinelStore(SharedSessionStoreSuite):
    @pytest.fixture
    def make_store(self, redis_sentinel):
        return lambda app_name, **options: open_store(
            redis_sentinel.url, app_name=app_name, **options
        )

    @pytest.fixture
    def make_unreachable_store(self):
        url = f"redis+sentinel://:hunter2@127.0.0.1:{free_port()}/scalekit/0"
        return lambda app_name: open_store(url, app_name=app_name)
