"""CacheModel: web2py's ``cache.x(key, f, time_expire)`` over any :class:`CacheBackend`.

The logic every backend shares lives here: ``time_expire`` checked at read time against the
time a value was stored, single-flight on a miss, the failure policy, and per-process
statistics. Backends hold only what differs (where and how entries are kept).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from time import monotonic, time
from typing import Any

from scalekit.cache import _flight
from scalekit.cache.backends.base import CacheBackend, Entry
from scalekit.core.checks import MAX_TTL
from scalekit.core.errors import CacheUnavailable, ConfigError, InvalidArgument, StoreUnavailable
from scalekit.core.process import after_fork

log = logging.getLogger("scalekit.cache")

#: ``time_expire`` when none is given: the model's own default (web2py's is 300 s).
DEFAULT: Any = type("DefaultExpire", (), {"__repr__": lambda self: "DEFAULT"})()
_POLICIES = ("fail_open", "fail_closed")


def _check_seconds(name: str, value: Any, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"cache option {name}={value!r} must be a number of seconds >= 0")
    return value


class CacheModel:
    """One cache (``cache.ram``, ``cache.disk``...): a backend plus web2py's semantics.

    ``time_expire`` (default 300 s) is a maximum age checked when reading: a value stored
    with one ``time_expire`` is reused by a later call only if it is younger than that
    call's ``time_expire``. ``None`` never expires, ``0`` forces a refresh. Entries are kept
    in the backend ``time_expire + keep_stale`` seconds (``keep_stale=None``: until
    evicted), so single-flight can hand out a stale value while one worker recomputes it.
    """

    def __init__(
        self,
        backend: CacheBackend,
        *,
        time_expire: float | None = 300,
        single_flight: bool | None = None,
        lease_ttl: float = 30,
        wait_timeout: float = 10,
        keep_stale: float | None = 300,
        on_error: str = "fail_open",
        log_interval: float = 30,
    ):
        if not isinstance(backend, CacheBackend):
            raise ConfigError(f"a CacheModel needs a CacheBackend, not {backend!r:.60}")
        if on_error not in _POLICIES:
            raise ConfigError(f"cache on_error={on_error!r}: use 'fail_open' or 'fail_closed'")
        self.backend = backend
        self.time_expire = _check_seconds("time_expire", time_expire, allow_none=True)
        #: Leases across processes on a miss; by default on for shared backends only.
        self.single_flight = backend.shared if single_flight is None else bool(single_flight)
        self.lease_ttl = _check_seconds("lease_ttl", lease_ttl) or 1
        self.wait_timeout = _check_seconds("wait_timeout", wait_timeout)
        self.keep_stale = _check_seconds("keep_stale", keep_stale, allow_none=True)
        self.on_error = on_error
        self.log_interval = _check_seconds("log_interval", log_interval)
        self.hits = self.misses = self.sets = self.stale = self.errors = 0
        self._last_log = -float("inf")
        self._key_locks: dict[str, list] = {}
        self._key_locks_guard = threading.Lock()
        after_fork(self)

    def _after_fork(self) -> None:
        self._key_locks, self._key_locks_guard = {}, threading.Lock()

    def __repr__(self) -> str:
        return f"<CacheModel {self.backend!r}>"

    # -- web2py's API -------------------------------------------------------------------
    def __call__(
        self,
        key: str,
        f: Callable[[], Any] | None,
        time_expire: float | None = DEFAULT,
        single_flight: bool | None = None,
    ) -> Any:
        """The value cached under ``key`` if younger than ``time_expire``, else ``f()``
        stored and returned. ``f=None`` deletes ``key`` (and returns ``None``)."""
        if f is None:
            self.delete(key)
            return None
        if time_expire is DEFAULT:
            time_expire = self.time_expire
        if time_expire is None or time_expire > 0:
            try:
                fresh, entry = self.backend.lookup(key, time_expire)
            except StoreUnavailable as exc:
                return self._down(exc, "read", key, f)
            if fresh:
                self.hits += 1
                return entry[0]
        elif time_expire == 0:
            entry = None  # a forced refresh: nothing stored before this call will do
        else:
            raise InvalidArgument(f"cache key {key!r}: time_expire={time_expire!r} must be >= 0")
        self.misses += 1
        use_lease = self.single_flight if single_flight is None else single_flight
        if use_lease:
            return _flight.leased(self, key, f, time_expire, entry, time())
        return _flight.in_process(self, key, f, time_expire, time())

    def get(self, key: str, default: Any = None, time_expire: float | None = None) -> Any:
        """The value under ``key`` (no older than ``time_expire`` if given), else ``default``."""
        try:
            entry = self.backend.get(key)
        except StoreUnavailable as exc:
            self._down(exc, "read", key)
            return default
        if entry is None or not self.fresh(entry, time_expire, 0.0):
            self.misses += 1
            return default
        self.hits += 1
        return entry.value

    def set(self, key: str, value: Any, time_expire: float | None = DEFAULT) -> None:
        """Store ``value`` under ``key``; it is kept ``time_expire + keep_stale`` seconds."""
        self.store(key, value, self.time_expire if time_expire is DEFAULT else time_expire)

    def delete(self, key: str) -> bool:
        """Remove ``key``; true if there was an entry."""
        try:
            return self.backend.delete(key)
        except StoreUnavailable as exc:
            self._down(exc, "delete", key)
            return False

    def increment(self, key: str, value: int = 1) -> int:
        """Atomically add ``value`` to the counter ``key`` (missing: 0) and return it.

        There is no value to invent when the backend is down, so this raises
        :class:`CacheUnavailable` under either failure policy.
        """
        try:
            return self.backend.incr(key, value)
        except StoreUnavailable as exc:
            self._note_error(exc, "increment", key)
            raise self._unavailable(exc, "increment", key) from exc

    def clear(self, regex: str | re.Pattern[str] | None = None) -> int:
        """Remove this app's keys that ``re.match`` ``regex`` (all if ``None``); the count."""
        pattern = re.compile(regex) if isinstance(regex, str) else regex
        try:
            return self.backend.clear(pattern)
        except StoreUnavailable as exc:
            self._down(exc, "clear", None)
            return 0

    def stats(self) -> dict[str, Any]:
        """This process's counts, plus what the backend itself reports under ``server``.

        The counters are plain ints, not locked, to keep a hit cheap: under heavy thread
        contention an increment may rarely be lost.
        """
        try:
            server = self.backend.server_stats()
        except StoreUnavailable as exc:
            server = {"error": str(exc)}
        return {
            "backend": self.backend.kind,
            "hits": self.hits,
            "misses": self.misses,
            "sets": self.sets,
            "stale": self.stale,
            "errors": self.errors,
            "server": server,
        }

    # -- shared with _flight ------------------------------------------------------------
    @staticmethod
    def fresh(entry: Entry, time_expire: float | None, since: float) -> bool:
        """Whether ``entry`` satisfies ``time_expire`` (0: stored at or after ``since``)."""
        if time_expire is None:
            return True
        if time_expire == 0:
            return entry.stored_at >= since
        return entry.stored_at + time_expire >= time()

    def storage_ttl(self, time_expire: float | None) -> float | None:
        """How long the backend keeps a value stored with ``time_expire``."""
        if time_expire is None or self.keep_stale is None:
            return None
        return min(max(time_expire + self.keep_stale, 1), MAX_TTL)

    def store(self, key: str, value: Any, time_expire: float | None) -> None:
        """``backend.set`` under the failure policy (a value that cannot be stored raises)."""
        try:
            self.backend.set(key, value, self.storage_ttl(time_expire))
        except StoreUnavailable as exc:
            self._down(exc, "write", key)
            return
        self.sets += 1

    def key_lock(self, key: str) -> _KeyLock:
        """A lock private to ``key`` in this process, dropped when nobody uses it."""
        return _KeyLock(self, key)

    def _note_error(self, exc: BaseException, action: str, key: str | None) -> None:
        self.errors += 1
        stamp = monotonic()
        if stamp - self._last_log >= self.log_interval:
            self._last_log = stamp
            about = f" (key {key!r})" if key is not None else ""
            log.warning(
                "cache %s: cannot %s%s: %s; %s (logged once per %gs)",
                self.backend.kind, action, about, exc,
                "computing values uncached" if self.on_error == "fail_open" else "raising",
                self.log_interval,
            )  # fmt: skip

    def _unavailable(self, exc: BaseException, action: str, key: str | None) -> CacheUnavailable:
        if isinstance(exc, CacheUnavailable):
            return exc
        about = f" key {key!r}" if key is not None else ""
        return CacheUnavailable(f"cache {self.backend!r}: cannot {action}{about}: {exc}")

    def _down(
        self, exc: StoreUnavailable, action: str, key: str | None, f: Callable | None = None
    ) -> Any:
        """Apply the failure policy: ``fail_closed`` raises, ``fail_open`` computes ``f``."""
        self._note_error(exc, action, key)
        if self.on_error == "fail_closed":
            raise self._unavailable(exc, action, key) from exc
        return None if f is None else f()


class _KeyLock:
    """Context manager for one key's in-process lock (refcounted in ``model._key_locks``)."""

    __slots__ = ("key", "model", "slot")

    def __init__(self, model: CacheModel, key: str):
        self.model, self.key = model, key

    def __enter__(self) -> None:
        model = self.model
        with model._key_locks_guard:
            slot = model._key_locks.get(self.key)
            if slot is None:
                slot = model._key_locks[self.key] = [threading.Lock(), 0]
            slot[1] += 1
        self.slot = slot
        slot[0].acquire()

    def __exit__(self, *exc_info: object) -> None:
        model, slot = self.model, self.slot
        slot[0].release()
        with model._key_locks_guard:
            slot[1] -= 1
            if slot[1] == 0 and model._key_locks.get(self.key) is slot:
                del model._key_locks[self.key]
