"""Fixtures for the cache tests: one model per backend, each on its real storage.

To run the conformance suite (:mod:`scalekit.testing.cache`) on another backend, add its
kind to ``CACHE_KINDS`` (and to ``SHARED_KINDS`` if other processes see its entries and
values are serialized) and a branch to ``backend_url_for`` that returns the URL of a real
server (e.g. ``request.getfixturevalue("redis_url")``).
"""

from __future__ import annotations

import pytest

from scalekit.cache import Cache, CacheModel
from scalekit.testing import (
    fresh_app_name,
    run_in_children,  # noqa: F401 (test_single_flight imports it)
)

#: Every backend the conformance suite runs on (``redis_unix``: Redis over its unix socket).
CACHE_KINDS = ["ram", "disk", "memcache", "redis", "redis_unix"]
#: Backends whose entries other processes see: process tests run on these only.
SHARED_KINDS = {"disk", "memcache", "redis", "redis_unix"}


def backend_url_for(kind: str, request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of a working backend of ``kind``, starting its server if needed."""
    if kind == "ram":
        return "ram://"
    if kind == "disk":
        return f"file://{tmp_path}/cache"
    if kind == "redis":
        return request.getfixturevalue("redis_url")
    if kind == "redis_unix":
        return request.getfixturevalue("redis_server").unix_url
    if kind == "memcache":
        return request.getfixturevalue("memcache_url")
    raise AssertionError(kind)


@pytest.fixture
def app_name() -> str:
    """A fresh app name per test, so tests sharing a server never see each other's data."""
    return fresh_app_name()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test on every backend; ``@pytest.mark.shared`` ones on shared backends only
    (entries other processes see, values that go through a serializer)."""
    if "cache_kind" in metafunc.fixturenames:
        shared = metafunc.definition.get_closest_marker("shared") is not None
        kinds = [kind for kind in CACHE_KINDS if not shared or kind in SHARED_KINDS]
        metafunc.parametrize("cache_kind", kinds)


@pytest.fixture
def backend_url(cache_kind, request, tmp_path) -> str:
    return backend_url_for(cache_kind, request, tmp_path)


@pytest.fixture
def make_model(backend_url, tmp_path):
    """Open models on the backend under test: ``make_model(app, **model_options)``."""
    opened: list[Cache] = []

    def make(app: str, **options) -> CacheModel:
        cache = Cache(app, folder=str(tmp_path / "default"), **options)
        opened.append(cache)
        return cache.model(backend_url)

    yield make
    for cache in opened:
        cache.close()


@pytest.fixture
def model(make_model, app_name) -> CacheModel:
    return make_model(app_name)
