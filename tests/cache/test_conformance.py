"""The cache semantics (:mod:`scalekit.testing.cache`), run against every backend on its real
storage: the shared suite on backends other processes see, the base suite on the others."""

from __future__ import annotations

import pytest

from scalekit.cache import open_backend
from scalekit.testing.cache import CacheBackendSuite, SharedCacheBackendSuite
from tests.cache.conftest import CACHE_KINDS, SHARED_KINDS, backend_url_for


@pytest.fixture
def make_backend(kind, request, tmp_path):
    url = backend_url_for(kind, request, tmp_path)
    return lambda app_name: open_backend(url, app_name=app_name)


@pytest.mark.parametrize("kind", [kind for kind in CACHE_KINDS if kind not in SHARED_KINDS])
class TestProcessLocalBackends(CacheBackendSuite):
    pass


@pytest.mark.parametrize("kind", [kind for kind in CACHE_KINDS if kind in SHARED_KINDS])
class TestSharedBackends(SharedCacheBackendSuite):
    pass
