"""Cache backends, opened by URL: ``open_backend("file:///var/cache/shop", app_name="shop")``.

=====================  ==========================================================
URL                    backend
=====================  ==========================================================
``ram://``             :class:`RamBackend`: this process's memory, LRU-bounded
``file:///var/cache``  :class:`DiskBackend`: one file per key, sharded folders
``memcache://h1,h2``   :class:`MemcacheBackend`: memcached nodes, rendezvous hashing
``redis://h:6379/0``   :class:`RedisBackend`: Redis, native TTLs (also ``rediss://``,
                       ``unix://``)
=====================  ==========================================================
"""

from __future__ import annotations

from typing import Any

from scalekit.cache.backends.base import CacheBackend, Entry
from scalekit.cache.backends.ram import parse_ram_url
from scalekit.core import urls
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError
from scalekit.core.registry import Backends

__all__ = [
    "CacheBackend",
    "DiskBackend",
    "Entry",
    "MemcacheBackend",
    "RamBackend",
    "RedisBackend",
    "open_backend",
]

#: kind of URL -> (module, class), imported on first use
BACKENDS = Backends({
    "ram": ("scalekit.cache.backends.ram", "RamBackend"),
    "file": ("scalekit.cache.backends.disk", "DiskBackend"),
    "memcache": ("scalekit.cache.backends.memcache", "MemcacheBackend"),
    "redis": ("scalekit.cache.backends.redis", "RedisBackend"),
})  # fmt: skip


@renamed_keyword("app", "app_name")
def open_backend(url: str, app_name: str = "app", **options: Any) -> CacheBackend:
    """Open the cache backend a URL names; ``options`` go to the backend's constructor.

    Options may also be given in the URL's query (``ram://?max_entries=1000``); an unknown
    option raises :class:`scalekit.core.errors.ConfigError`.
    """
    if not isinstance(url, str):
        raise ConfigError(f"a cache backend is a URL or a CacheBackend, not {url!r:.60}")
    if url.strip().lower().startswith("ram:"):
        return BACKENDS.for_kind("ram").from_url(
            parse_ram_url(url.strip()), app_name=app_name, **options
        )
    settings = urls.parse(url, kinds=BACKENDS.kinds - {"ram"})
    return BACKENDS.for_kind(settings.kind).from_url(settings, app_name=app_name, **options)


__getattr__ = BACKENDS.export
