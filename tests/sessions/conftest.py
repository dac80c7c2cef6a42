"""Fixtures for the session tests: one store per backend, each on its real server."""

from __future__ import annotations

import contextlib

import pytest
import redis

from scalekit import sessions
from scalekit.sessions.stores import open_store
from scalekit.testing import fresh_app_name
from tests.servers import free_port

#: Every backend the conformance suite runs on.
#: ``redis_unix``: Redis over its unix socket (``unix://``).
#: ``redis_cached``: Redis with client-side caching (``?client_cache=true``).
STORE_KINDS = [
    "file", "sqlite", "postgres", "mysql", "memcache", "memcache2", "redis", "redis_unix",
    "redis_cached",
]  # fmt: skip


@pytest.fixture
def redis_client(redis_url):
    """A plain redis-py client of the test Redis, to look at what the stores did."""
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        yield client


@pytest.fixture
def redis_store(redis_url, app_name):
    """A Redis session store of a fresh app, closed after the test."""
    opened = sessions.open_store(redis_url, app_name=app_name)
    yield opened
    opened.close()


@pytest.fixture
def app_name() -> str:
    """A fresh app name per test, so tests sharing a server never see each other's data."""
    return fresh_app_name()


def store_url_for(kind: str, request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of a working store of ``kind``, starting its server if needed."""
    if kind == "file":
        return f"file://{tmp_path}/sessions"
    if kind == "sqlite":
        return f"sqlite://{tmp_path}/sessions.sqlite"
    if kind == "postgres":
        return request.getfixturevalue("postgres_url")
    if kind == "mysql":
        return request.getfixturevalue("mysql_url")
    if kind == "memcache":
        return "memcache://" + request.getfixturevalue("memcached_servers")[0].address
    if kind == "memcache2":
        return request.getfixturevalue("memcache_url")
    if kind == "redis":
        return request.getfixturevalue("redis_url")
    if kind == "redis_unix":
        return request.getfixturevalue("redis_server").unix_url
    if kind == "redis_cached":
        return request.getfixturevalue("redis_url") + "?client_cache=true"
    raise AssertionError(kind)


def down_url_for(kind: str, tmp_path) -> str:
    """A URL of ``kind`` whose server is not there (a free port, an unusable path)."""
    port = free_port()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    return {
        "file": f"file://{blocker}/sessions",
        "sqlite": f"sqlite://{blocker}/sessions.sqlite",
        "postgres": f"postgres://postgres@127.0.0.1:{port}/scalekit_test",
        "mysql": f"mysql://scalekit:pw@127.0.0.1:{port}/scalekit_test",
        "memcache": f"memcache://127.0.0.1:{port}",
        "memcache2": f"memcache://127.0.0.1:{port},127.0.0.1:{free_port()}",
        "redis": f"redis://127.0.0.1:{port}/0",
        "redis_unix": f"unix://{tmp_path}/no-redis.sock?db=0",
        "redis_cached": f"redis://127.0.0.1:{port}/0?client_cache=true",
    }[kind]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def store_url(store_kind, request, tmp_path) -> str:
    return store_url_for(store_kind, request, tmp_path)


@pytest.fixture
def store(store_url, app_name):
    opened = open_store(store_url, app_name=app_name)
    yield opened
    opened.close()
