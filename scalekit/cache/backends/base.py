"""The cache backend protocol every backend implements, and the checks of what it is given.

A backend stores, per key, one value and the time it was stored (an :class:`Entry`). It
knows nothing of web2py's ``time_expire``: the :class:`~scalekit.cache.CacheModel` checks
that at read time against ``Entry.stored_at``. The backend's own ``ttl`` only bounds how
long a value is kept at all. Keys are the application's keys; each backend namespaces them
per app (a folder, a key prefix, a private dict), so ``clear`` never touches another app.

Backends are thread-safe and fork-safe: clients, file handles and locks are created lazily
in the process that uses them (gunicorn forks workers after the app module is imported).
What backends share beyond the protocol comes from the floors below: option merging, TTL and
lease checks from :mod:`scalekit.core`, clients, lease primitives and file helpers from
:mod:`scalekit.connect`.
"""

from __future__ import annotations

import abc
import re
import time
import warnings
from typing import Any, NamedTuple

from scalekit.core import checks
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError, InvalidArgument
from scalekit.core.urls import BackendURL

__all__ = ["CacheBackend", "Entry", "check_bound", "check_key", "check_ttl"]


class Entry(NamedTuple):
    """What ``get`` returns: the value and the Unix time it was stored (or last incremented)."""

    value: Any
    stored_at: float


def check_key(key: Any) -> str:
    """Return ``key`` if it is a usable cache key: a non-empty str of at most 1024 chars."""
    if type(key) is not str or not 0 < len(key) <= 1024:
        raise InvalidArgument(f"a cache key must be a str of 1-1024 characters, got {key!r:.60}")
    return key


def check_ttl(ttl: Any) -> float | None:
    """A storage TTL in seconds: ``None`` (keep until evicted) or 0 < ttl <= 30 days."""
    return checks.check_ttl(ttl, "cache TTL")


class CacheBackend(abc.ABC):
    """One storage for cache entries. Subclasses implement the abstract methods.

    Failures to reach the storage raise :class:`scalekit.core.errors.CacheUnavailable` (a
    :class:`~scalekit.core.errors.StoreUnavailable`) naming the backend; a value the backend
    cannot store raises :class:`~scalekit.core.errors.SerializationError` naming the key.
    """

    #: A short name for logs, errors and stats: "ram", "disk", "memcache", "redis".
    kind = "backend"
    #: True when other processes or servers see the same entries; the model then turns
    #: single-flight (leases) on by default.
    shared = False

    @renamed_keyword("app", "app_name")
    def __init__(self, app_name: str = "app"):
        self.app_name = checks.check_app_name(app_name)

    @property
    def app(self) -> str:
        """The former name of :attr:`app_name`, read-only, kept for one release."""
        warnings.warn("CacheBackend.app is now app_name", DeprecationWarning, stacklevel=2)
        return self.app_name

    @classmethod
    @abc.abstractmethod
    def from_url(cls, settings: BackendURL, app_name: str = "app", **options: Any) -> CacheBackend:
        """Open the backend from parsed URL settings; keyword options override URL options."""

    # -- values -------------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, key: str) -> Entry | None:
        """The entry of ``key``, or ``None`` if there is none or its storage TTL has passed.

        A counter (see :meth:`incr`) reads as an ``int``.
        """

    def lookup(self, key: str, time_expire: float | None) -> tuple[bool, Entry | None]:
        """``(fresh, entry)``: the entry of ``key`` and whether it is younger than
        ``time_expire`` (``None``: any age). One call, so a backend can do it in one step."""
        entry = self.get(key)
        fresh = entry is not None and (
            time_expire is None or entry.stored_at + time_expire >= time.time()
        )
        return fresh, entry

    @abc.abstractmethod
    def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (``None``: until evicted)."""

    @abc.abstractmethod
    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` has no live entry; true if it was stored."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; true if there was an entry."""

    @abc.abstractmethod
    def incr(self, key: str, delta: int = 1) -> int:
        """Atomically add ``delta`` to the int under ``key`` and return the new value.

        A missing key starts at 0 and is kept with no TTL; an existing entry keeps its TTL.
        An entry that is not an int raises ``ValueError`` naming the key.
        """

    @abc.abstractmethod
    def clear(self, pattern: re.Pattern[str] | None = None) -> int:
        """Remove this app's entries whose key ``pattern.match``-es (all if ``None``).

        Returns how many were removed. Never touches another app's entries.
        """

    # -- leases (single-flight) ---------------------------------------------------------
    @abc.abstractmethod
    def try_lease(self, key: str, token: str, ttl: float) -> bool:
        """Take the lease of ``key`` for ``ttl`` seconds if nobody holds a live one.

        Leases live apart from values (``clear`` and ``delete`` leave them); a lease whose
        holder died expires after ``ttl``.
        """

    @abc.abstractmethod
    def release_lease(self, key: str, token: str) -> bool:
        """Release the lease of ``key`` if ``token`` still holds it; true if released."""

    # -- the rest -----------------------------------------------------------------------
    def server_stats(self) -> dict[str, Any]:
        """Figures the storage itself keeps (entries, memory, server hit counts...)."""
        return {}

    def close(self) -> None:  # noqa: B027 (optional: backends without clients keep it empty)
        """Release clients and handles of this process (they reopen on next use)."""

    def _after_fork(self) -> None:  # noqa: B027 (optional)
        """Replace locks, clients and handles inherited from the parent process."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} app_name={self.app_name!r}>"


def check_bound(name: str, value: Any) -> int | None:
    """Validate a size bound option: a positive int or ``None`` for no bound."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"cache option {name}={value!r} must be a positive int or None")
    return value
