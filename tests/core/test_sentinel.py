"""``redis+sentinel://`` URLs, and the connector on the primary that Sentinels name: both
the lean path and the redis-py client follow a failover."""

from __future__ import annotations

import time

import pytest
import redis

from scalekit.connect.redis import Sentinel, open_redis
from scalekit.core import urls
from scalekit.core.errors import ConfigError


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database():
    settings = urls.parse(
        "redis+sentinel://:pw@s1:1,s2,[::1]:3/my%20app/2?sentinel_password=sp&socket_timeout=1",
        kinds={"redis"},
    )
    assert isinstance(settings, urls.SentinelURL)
    assert settings.sentinels == (("s1", 1), ("s2", 26379), ("::1", 3))
    assert (settings.service, settings.db, settings.password) == ("my app", 2, "pw")
    assert settings.sentinel_password == "sp" and dict(settings.options) == {"socket_timeout": "1"}
    assert "pw" not in repr(settings) and "sp" not in str(settings)
    assert urls.parse("redis+sentinel://s1/app").db == 0


def test_an_option_sentinels_do_not_take_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown option db"):
        open_redis("redis+sentinel://s1/app?db=1")


def test_the_connector_follows_the_primary_through_a_failover(redis_sentinel):
    connector = open_redis(redis_sentinel.url, socket_timeout=0.5)
    assert isinstance(connector.topology, Sentinel)
    connector.call("SET", "sentinel:key", "before")
    assert connector.client.get("sentinel:key") == b"before"
    with redis_sentinel.primary_killed() as killed:
        started = time.monotonic()
        while True:
            try:
                connector.call("SET", "sentinel:key", "after")
                assert connector.client.get("sentinel:key") == b"after"
                break
            except redis.ConnectionError:
                assert time.monotonic() - started < 5
                time.sleep(0.05)
        promoted = redis_sentinel.primary()
        assert promoted is not killed
        assert redis.Redis(port=promoted.port).get("sentinel:key") == b"after"
    connector.close()


def test_a_maintenance_flag_and_a_task_engine_work_on_a_sentinel_url(redis_sentinel):
    """Every Redis-using opener takes a Sentinel URL: the maintenance flag and the task
    engine as well as sessions and the cache (their suites run in tests/sessions, tests/cache)."""
    from scalekit.maintenance import State, open_flag
    from scalekit.tasks import open_engine
    from scalekit.testing import fresh_app_name

    app_name = fresh_app_name()
    flag = open_flag(redis_sentinel.url, app_name=app_name)
    engine = open_engine(redis_sentinel.url, app_name=app_name)
    try:
        flag.write(State(mode="read-only", message="moving"))
        assert flag.read().message == "moving"
        engine.enqueue("default", "t1", b"payload")
        [claim] = engine.claim(["default"], "worker-1", wait=1.0)
        assert (claim.task_id, claim.payload) == ("t1", b"payload")
        engine.ack(claim)
        assert engine.find("t1") is None
    finally:
        flag.clear()
        flag.close()
        engine.close()
