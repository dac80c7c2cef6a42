"""Session-wide real servers: one redis-server, two memcached, one PostgreSQL cluster, one
MariaDB server, one S3-compatible server (moto).

Each starts on first use on a free loopback port in its own temporary folder, and is stopped
and removed at the end of the run, also when tests fail (pytest runs the code after
``yield`` whatever the tests did). A server that cannot start fails the tests that need it
with the tail of its log.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import TypeVar

import pytest

from tests.servers import (
    MariaDBServer,
    MemcachedServer,
    PostgresServer,
    RedisCluster,
    RedisSentinelGroup,
    RedisServer,
    S3Server,
    Server,
    ServerStartError,
)

_S = TypeVar("_S", bound=Server)


def _running(stack: contextlib.ExitStack, server: _S) -> _S:
    """Start ``server`` (stopped when ``stack`` closes) or fail loudly with its log tail."""
    try:
        return stack.enter_context(server.running())
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with contextlib.ExitStack() as stack:
        yield _running(stack, RedisServer())


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:<port>/0`` of the private redis-server."""
    return redis_server.url


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelGroup]:
    """A primary, a replica and three Sentinels: ``addresses`` (the Sentinels), ``service``,
    and ``primary_killed()`` (SIGKILL of the primary for the body) for failover tests."""
    with contextlib.ExitStack() as stack:
        yield _running(stack, RedisSentinelGroup())


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[tuple[str, ...]]:
    """A 6-node Redis Cluster (3 primaries, 3 replicas, every replica's link up): its seed
    addresses, ``127.0.0.1:<port>`` each."""
    with contextlib.ExitStack() as stack:
        yield _running(stack, RedisCluster()).seeds


@pytest.fixture(scope="session")
def memcached_servers() -> Iterator[tuple[MemcachedServer, MemcachedServer]]:
    """Two memcached instances, for multi-node tests."""
    with contextlib.ExitStack() as stack:
        yield _running(stack, MemcachedServer()), _running(stack, MemcachedServer())


@pytest.fixture(scope="session")
def memcache_url(memcached_servers: tuple[MemcachedServer, MemcachedServer]) -> str:
    """``memcache://127.0.0.1:<p1>,127.0.0.1:<p2>`` naming both memcached instances."""
    return "memcache://" + ",".join(server.address for server in memcached_servers)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with contextlib.ExitStack() as stack:
        yield _running(stack, PostgresServer())


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgres://postgres@127.0.0.1:<port>/scalekit_test`` of the private cluster."""
    return postgres_server.url


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MariaDBServer]:
    with contextlib.ExitStack() as stack:
        yield _running(stack, MariaDBServer())


@pytest.fixture(scope="session")
def mysql_url(mysql_server: MariaDBServer) -> str:
    """``mysql://scalekit:...@127.0.0.1:<port>/scalekit_test`` of the private MariaDB."""
    return mysql_server.url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3-compatible server: ``url(bucket, prefix)``, ``create_bucket``, ``client()``."""
    with contextlib.ExitStack() as stack:
        yield _running(stack, S3Server())


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    """``s3://KEY:SECRET@<bucket>/?endpoint_url=...&region=...`` of a fresh, empty bucket."""
    bucket = s3_server.create_bucket(f"scalekit-{uuid.uuid4().hex[:16]}")
    return s3_server.url(bucket)
