"""A cache with web2py's API (``cache.ram(key, f, time_expire)``) over ram, disk, memcache
and Redis, with single-flight on a miss and a failure policy for shared backends.

from scalekit.cache import Cache
cache = Cache("shop", redis="redis://cache:6379/0")
cache.ram = cache.disk = cache.redis          # every server shares one cache
value = cache.ram("front-page", build_page, time_expire=60)
"""

from typing import Any

from scalekit.cache import backends
from scalekit.cache.backends import CacheBackend, DiskBackend, Entry, RamBackend, open_backend
from scalekit.cache.facade import Cache
from scalekit.cache.model import DEFAULT, CacheModel
from scalekit.core.errors import CacheUnavailable

__all__ = [
    "DEFAULT",
    "Cache",
    "CacheBackend",
    "CacheModel",
    "CacheUnavailable",
    "DiskBackend",
    "Entry",
    "MemcacheBackend",
    "RamBackend",
    "RedisBackend",
    "open_backend",
]


def __getattr__(name: str) -> Any:
    if name in ("MemcacheBackend", "RedisBackend"):  # imported on first use: their drivers
        return getattr(backends, name)
    raise AttributeError(name)
