"""PrefixedBackend: another backend's storage with a prefix before every key, for web2py's
``cache.with_prefix(cache.ram, "blog:")`` (:meth:`scalekit.cache.Cache.with_prefix`)."""

from __future__ import annotations

import re
from typing import Any

from scalekit.cache.backends.base import CacheBackend, Entry
from scalekit.core.errors import ConfigError
from scalekit.core.urls import BackendURL


class PrefixedBackend(CacheBackend):
    """``backend`` with ``prefix`` before every key and lease; ``clear`` removes only
    prefixed keys (a regex given to it matches what follows the prefix)."""

    def __init__(self, backend: CacheBackend, prefix: str):
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError(f"a cache key prefix must be a non-empty str, not {prefix!r:.60}")
        super().__init__(backend.app_name)
        self.backend, self.prefix = backend, prefix
        self.kind, self.shared = backend.kind, backend.shared

    @classmethod
    def from_url(cls, settings: BackendURL, app_name: str = "app", **options: Any) -> CacheBackend:
        raise ConfigError(
            f"{settings.url!r}: a prefix wraps an opened cache: cache.with_prefix(cache.ram, 'p:')"
        )

    def get(self, key: str) -> Entry | None:
        return self.backend.get(self.prefix + key)

    def lookup(self, key: str, time_expire: float | None) -> tuple[bool, Entry | None]:
        return self.backend.lookup(self.prefix + key, time_expire)

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        self.backend.set(self.prefix + key, value, ttl)

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        return self.backend.add(self.prefix + key, value, ttl)

    def delete(self, key: str) -> bool:
        return self.backend.delete(self.prefix + key)

    def incr(self, key: str, delta: int = 1) -> int:
        return self.backend.incr(self.prefix + key, delta)

    def clear(self, pattern: re.Pattern[str] | None = None) -> int:
        rest = "" if pattern is None else f"(?:{pattern.pattern})"
        flags = 0 if pattern is None else pattern.flags
        return self.backend.clear(re.compile(re.escape(self.prefix) + rest, flags))

    def try_lease(self, key: str, token: str, ttl: float) -> bool:
        return self.backend.try_lease(self.prefix + key, token, ttl)

    def release_lease(self, key: str, token: str) -> bool:
        return self.backend.release_lease(self.prefix + key, token)

    def server_stats(self) -> dict[str, Any]:
        return self.backend.server_stats()

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        return f"<PrefixedBackend {self.prefix!r} of {self.backend!r}>"
