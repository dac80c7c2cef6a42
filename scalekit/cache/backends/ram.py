"""RamBackend: this process's memory, an LRU dict bounded by ``max_entries``.

When full, expired entries go first, then the least recently used live ones.
Values are kept as the objects themselves (no pickling, no copy): what ``get`` returns is
the very object that was stored, so callers must not mutate it. Each process has its own
entries; put a shared backend behind ``cache.ram`` when many processes must agree.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from time import time
from typing import Any
from urllib.parse import parse_qsl

from scalekit.cache.backends.base import CacheBackend, Entry, check_bound, check_key, check_ttl
from scalekit.core.checks import check_lease
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError, InvalidArgument, InvalidArgumentType
from scalekit.core.options import merge_options, positive_int_or_none
from scalekit.core.process import after_fork
from scalekit.core.urls import BackendURL

#: Entries kept by default before the least recently used ones are evicted.
DEFAULT_MAX_ENTRIES = 10_000
#: A full cache looks for expired entries at most this often (seconds): a scan is O(entries).
PURGE_INTERVAL = 1.0


def parse_ram_url(url: str) -> BackendURL:
    """Settings of ``ram://`` or ``ram://?max_entries=1000`` (a scheme only the cache knows)."""
    scheme, sep, rest = url.partition("://")
    path, _, query = rest.partition("?")
    if scheme.lower() != "ram" or not sep or path.strip("/"):
        raise ConfigError(f"{url!r}: a ram URL has no host or path: ram://?max_entries=1000")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise ConfigError(f"{url!r}: the options after '?' must look like a=1&b=2") from None
    return BackendURL(url=url, options=options)


class RamBackend(CacheBackend):
    """Entries in an ``OrderedDict`` under one lock; the least recently used go first."""

    kind = "ram"
    shared = False

    @renamed_keyword("app", "app_name")
    def __init__(self, app_name: str = "app", *, max_entries: int | None = DEFAULT_MAX_ENTRIES):
        super().__init__(app_name)
        #: The most entries kept (``None``: unbounded, web2py's behaviour).
        self.max_entries = check_bound("max_entries", max_entries)
        self._lock = threading.Lock()
        # key -> (Entry, expires_at or None); the order is the LRU order, oldest first
        self._data: OrderedDict[str, tuple[Entry, float | None]] = OrderedDict()
        self._leases: dict[str, tuple[str, float]] = {}
        # No entry expires before _next_purge: until then, a full cache has nothing to purge.
        self._next_purge, self._purged_at = float("inf"), -float("inf")
        after_fork(self)

    @classmethod
    @renamed_keyword("app", "app_name")
    def from_url(cls, settings: BackendURL, app_name: str = "app", **options: Any) -> RamBackend:
        """Open ``ram://?max_entries=1000`` (``max_entries=0``: unbounded)."""
        merged = merge_options(settings, {"max_entries": positive_int_or_none}, options)
        return cls(app_name=app_name, **merged)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    # -- values -------------------------------------------------------------------------
    # Reads take no lock: each dict operation is atomic, the stored tuples are immutable,
    # and a key another thread removed meanwhile only skips the LRU bump. Writes lock.
    def get(self, key: str) -> Entry | None:
        return self.lookup(key, None)[1]

    def lookup(self, key: str, time_expire: float | None) -> tuple[bool, Entry | None]:
        now, data = time(), self._data
        item = data.get(key)
        if item is None:
            return False, None
        entry, expires = item
        if expires is not None and expires <= now:
            with self._lock:
                if data.get(key) is item:  # not replaced meanwhile
                    del data[key]
            return False, None
        try:  # noqa: SIM105 - suppress() would cost a hit 30% more
            data.move_to_end(key)
        except KeyError:
            pass
        return time_expire is None or entry[1] + time_expire >= now, entry

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        check_key(key)
        ttl = check_ttl(ttl)
        stamp = time()
        item = (Entry(value, stamp), None if ttl is None else stamp + ttl)
        with self._lock:
            self._put(key, item)

    def _put(self, key: str, item: tuple[Entry, float | None]) -> None:
        """Store ``item`` as the most recent entry and evict beyond the bound (lock held)."""
        data = self._data
        data[key] = item
        data.move_to_end(key)
        expires = item[1]
        if expires is not None and expires < self._next_purge:
            self._next_purge = expires
        if self.max_entries is not None and len(data) > self.max_entries:
            now = time()
            if now >= max(self._next_purge, self._purged_at + PURGE_INTERVAL):
                self._purge(now)
            while len(data) > self.max_entries:
                data.popitem(last=False)

    def _purge(self, now: float) -> None:
        """Drop the entries expired at ``now`` and note when the first of the others expires
        (lock held)."""
        data, first = self._data, float("inf")
        for key, (_, expires) in list(data.items()):
            if expires is None:
                continue
            if expires <= now:
                del data[key]
            elif expires < first:
                first = expires
        self._next_purge, self._purged_at = first, now

    def _live(self, key: str, at: float) -> tuple[Entry, float | None] | None:
        item = self._data.get(key)
        if item is not None and item[1] is not None and item[1] <= at:
            del self._data[key]
            return None
        return item

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        check_key(key)
        ttl = check_ttl(ttl)
        stamp = time()
        with self._lock:
            if self._live(key, stamp) is not None:
                return False
            self._put(key, (Entry(value, stamp), None if ttl is None else stamp + ttl))
            return True

    def delete(self, key: str) -> bool:
        with self._lock:
            item = self._data.pop(key, None)
        return item is not None and (item[1] is None or item[1] > time())

    def incr(self, key: str, delta: int = 1) -> int:
        check_key(key)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise InvalidArgumentType(
                f"increment of {key!r}: the delta must be an int, got {delta!r}"
            )
        stamp = time()
        with self._lock:
            item = self._live(key, stamp)
            if item is None:
                current, expires = 0, None
            else:
                current, expires = item[0].value, item[1]
                if isinstance(current, bool) or not isinstance(current, int):
                    raise InvalidArgument(
                        f"cannot increment cache key {key!r}: it holds a "
                        f"{type(current).__name__}, not an int"
                    )
            value = current + delta
            self._put(key, (Entry(value, stamp), expires))
            return value

    def clear(self, pattern: re.Pattern[str] | None = None) -> int:
        with self._lock:
            if pattern is None:
                count = len(self._data)
                self._data.clear()
                return count
            doomed = [key for key in list(self._data) if pattern.match(key)]
            for key in doomed:
                del self._data[key]
            return len(doomed)

    # -- leases -------------------------------------------------------------------------
    def try_lease(self, key: str, token: str, ttl: float) -> bool:
        ttl = check_lease(token, ttl)
        stamp = time()
        with self._lock:
            holder = self._leases.get(key)
            if holder is not None and holder[1] > stamp:
                return False
            self._leases[key] = (token, stamp + ttl)
            return True

    def release_lease(self, key: str, token: str) -> bool:
        with self._lock:
            holder = self._leases.get(key)
            if holder is None or holder[0] != token:
                return False
            del self._leases[key]
            return True

    def server_stats(self) -> dict[str, Any]:
        with self._lock:
            return {"entries": len(self._data), "max_entries": self.max_entries}

    def __repr__(self) -> str:
        return f"<RamBackend app_name={self.app_name!r} max_entries={self.max_entries}>"
