"""The shared cache semantics on Redis behind Sentinels (``redis+sentinel://``)."""

from __future__ import annotations

import pytest

from scalekit.cache import open_backend
from scalekit.testing.cache import SharedCacheBackendSuite


class TestSentinelBackend(SharedCacheBackendSuite):
    @pytest.fixture
    def make_backend(self, redis_sentinel):
        return lambda app_name: open_backend(redis_sentinel.url, app_name=app_name)
