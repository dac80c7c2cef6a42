"""The session store protocol on Redis behind Sentinels (``redis+sentinel://``), and a
session save across a failover: unavailable while no primary is named, then working again."""

from __future__ import annotations

import time

import pytest

from scalekit.core.errors import StoreUnavailable
from scalekit.sessions.stores import ANY, open_store
from scalekit.testing.sessions import SID, SharedSessionStoreSuite
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


def test_a_save_fails_only_briefly_when_the_primary_is_killed(redis_sentinel, app_name):
    store = open_store(redis_sentinel.url, app_name=app_name)
    try:
        assert store.save(SID, b"before", 60, None)
        with redis_sentinel.primary_killed():
            started, failures = time.monotonic(), 0
            while True:
                try:
                    assert store.save(SID, b"after", 60, ANY)
                    break
                except StoreUnavailable as exc:
                    assert "127.0.0.1" in str(exc) and time.monotonic() - started < 5, exc
                    failures += 1
                    time.sleep(0.05)
            assert failures, "a save with the primary just killed should have failed"
            assert store.load(SID).data == b"after"
    finally:
        store.close()
