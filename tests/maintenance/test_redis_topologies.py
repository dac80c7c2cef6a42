"""The maintenance flag on Redis behind Sentinels and on a Redis Cluster: the flag suite
(every test of test_middleware, test_schedule, test_gunicorn and the CLI's flip that takes
the flag) runs here again on each, and a read while the primary fails over keeps the last
known state, as the README says."""

from __future__ import annotations

import inspect
import logging
import time

import pytest
import redis

from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.maintenance import Maintenance, RedisFlag, State, open_flag
from scalekit.testing import fresh_app_name
from tests.maintenance import test_cli, test_gunicorn, test_middleware, test_schedule
from tests.servers import RedisCluster, RedisSentinelGroup

TOPOLOGIES = ["sentinel", "cluster"]


def _flag_suite() -> dict:
    """The tests of the flag modules that take the flag (by ``flag``, ``flag_url``, a site
    or a server made on it, or the CLI's ``redis_url``), with those modules' fixtures."""
    takes = {"flag", "flag_url", "site", "served", "redis_url"}
    suite = {"site": test_middleware.site, "served": test_gunicorn.served}
    for module in (test_middleware, test_schedule, test_gunicorn, test_cli):
        for name, test in vars(module).items():
            if name.startswith("test_") and takes & set(inspect.signature(test).parameters):
                suite[name] = test
    return suite


globals().update(_flag_suite())


def topology_url(request: pytest.FixtureRequest, topology: str) -> str:
    """The URL of the shared Sentinel group or cluster (started on first use)."""
    if topology == "sentinel":
        return request.getfixturevalue("redis_sentinel").url
    return "redis+cluster://" + ",".join(request.getfixturevalue("redis_cluster"))


@pytest.fixture(params=TOPOLOGIES)
def flag_url(request) -> str:
    """The URL of the flag under test: the Sentinel group's or the cluster's."""
    return topology_url(request, request.param)


@pytest.fixture
def redis_url(flag_url) -> str:
    """The CLI test's flag URL: the topology's."""
    return flag_url


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("valkey", [False, True])
def test_each_topologys_schemes_open_a_flag_every_server_shares(request, topology, valkey):
    url = topology_url(request, topology)
    if valkey:
        url = url.replace("redis+", "valkey+", 1)
    app_name = fresh_app_name()
    writer, reader = open_flag(url, app_name), open_flag(url, app_name)
    try:
        assert isinstance(writer, RedisFlag) and writer.key == f"scalekit:m:{app_name}"
        writer.write(State("down", "moving"))
        assert reader.read() == State("down", "moving")
        writer.clear()
        assert reader.read() is None
    finally:
        writer.close()
        reader.close()


@pytest.mark.parametrize("url", ["redis+shard://n1:7000", "memcache+cluster://n1:11211"])
def test_other_schemes_are_refused_naming_the_flag_urls(url):
    with pytest.raises(ConfigError, match="redis\\+sentinel://, redis\\+cluster://"):
        open_flag(url)


@pytest.fixture(params=TOPOLOGIES)
def own_group(request):
    """A Sentinel group or a cluster of this test's own, for it kills a primary."""
    group = RedisSentinelGroup() if request.param == "sentinel" else RedisCluster()
    with group.running():
        yield group


def test_a_read_during_a_failover_keeps_the_last_state(own_group, caplog, request):
    app_name = fresh_app_name()
    flag = open_flag(own_group.url, app_name)
    checker = Maintenance(own_group.url, app_name, cache_seconds=0, retry_seconds=0)
    flag.write(State("read-only", "Failover"))
    primary, killed = _primary_of(own_group, flag.key)
    _wait_replicated(primary)
    assert checker.current().mode == "read-only"
    with killed:
        with pytest.raises(StoreUnavailable, match="cannot change the maintenance flag"):
            flag.write(State("down"))  # no primary: the flip fails (the CLI exits 1)
        failed, seconds = _read_until_readable(checker)
    print(f"\n{request.node.callspec.id}: {failed} reads failed, the flag read again "
          f"{seconds:.2f}s after the kill")  # fmt: skip
    assert failed > 0  # the fallback was exercised, not skipped by a fast failover
    assert checker.current() == State("read-only", "Failover")  # the replica had it
    flag.clear()
    assert checker.current() is None
    flag.close()
    checker.close()
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and "keeping the last known state (read-only on: Failover)" in logged[0]


def _primary_of(group, key: str):
    """The primary serving ``key``, and its kill for a ``with`` (the group whole after it)."""
    if isinstance(group, RedisCluster):
        return group.serving(key)[0], group.primary_killed(key)
    return group.primary(), group.primary_killed()


def _wait_replicated(primary) -> None:
    """Wait until the replica of ``primary`` has all that it wrote."""

    def replicated() -> bool:
        info = client.info("replication")
        return info.get("slave0", {}).get("offset", -1) >= info["master_repl_offset"]

    with redis.Redis(port=primary.port) as client:
        _wait_for(replicated)


def _read_until_readable(checker: Maintenance, timeout: float = 30.0) -> tuple[int, float]:
    """Read the flag until a read succeeds; every answer meanwhile must be the last known
    state. The number of failed reads, and how long until one succeeded."""
    known, started, failed = checker.state, time.monotonic(), 0
    while time.monotonic() - started < timeout:
        assert checker.current() == known
        if checker.error is None:
            return failed, time.monotonic() - started
        failed += 1
        time.sleep(0.05)
    raise AssertionError(f"the flag was not readable again within {timeout} s")


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
