"""A cache with web2py's API (``cache.ram(key, f, time_expire)``) over ram, disk, memcache
and Redis, with single-flight on a miss and a failure policy for shared backends.

from scalekit.cache import Cache
cache = Cache("shop", redis="redis://cache:6379/0")
cache.ram = cache.disk = cache.redis          # every server shares one cache
value = cache.ram("front-page", build_page, time_expire=60)
"""

from scalekit.cache.backends import CacheBackend, DiskBackend, Entry, RamBackend, open_backend
from scalekit.cache.facade import Cache
from scalekit.cache.model import DEFAULT, CacheModel
from scalekit.errors import CacheUnavailable

__all__ = [
    "DEFAULT",
    "Cache",
    "CacheBackend",
    "CacheModel",
    "CacheUnavailable",
    "DiskBackend",
    "Entry",
    "RamBackend",
    "open_backend",
]
