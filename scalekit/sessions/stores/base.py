"""The session store protocol every backend implements, and what they share.

A store keeps, per session id, one opaque payload (bytes already serialized and signed by
the session layer), a version for compare-and-set, and the time it was last saved or
touched. It never interprets the payload. Stores are thread-safe and fork-safe: clients
are created lazily in the process (and, where the client needs it, the thread) that uses
them.
"""

from __future__ import annotations

import abc
import logging
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from scalekit.core.checks import check_app_name, check_ttl
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import InvalidArgument, InvalidArgumentType
from scalekit.core.urls import BackendURL

log = logging.getLogger("scalekit.sessions")

#: ``save(..., expected=ANY)`` writes whatever is stored (py4web's ``set``, admin tools).
ANY: Any = type("AnyVersion", (), {"__repr__": lambda self: "ANY"})()

#: What a session id may look like: URL-safe base64 characters, 16 to 128 of them. Every
#: store refuses other ids, so no cookie can name a path, a key pattern or a SQL fragment.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,128}\Z")


@dataclass
class CleanupStats:
    """What one cleanup pass did: sessions examined and deleted (or, dry, that would be)."""

    examined: int = 0
    deleted: int = 0
    #: What else the pass did or found (lock files removed, an app with no session).
    note: str = ""
    #: The store expires sessions itself: later passes would have nothing to do.
    self_expiring: bool = False


#: Called after each cleanup batch with the running totals (``sessions2trash -v``).
Progress = Callable[[CleanupStats], None]


class Record(NamedTuple):
    """What ``load`` returns: the payload, its version, and when it was last saved/touched."""

    data: bytes
    version: Any
    touched_at: float


def is_session_id(sid: object) -> bool:
    """True if ``sid`` is a well-formed session id (see :data:`SESSION_ID`)."""
    return isinstance(sid, str) and SESSION_ID.match(sid) is not None


def check_session_id(sid: str) -> str:
    """Return ``sid`` if it is a well-formed session id, else raise ``ValueError``."""
    if not is_session_id(sid):
        raise InvalidArgument(f"malformed session id {sid!r:.40}")
    return sid


class SessionStore(abc.ABC):
    """One backend for session records. Subclasses implement the abstract methods.

    ``ttl`` is in seconds; ``None`` means "no expiry" (the record stays until deleted or
    removed by ``sessions2trash``). Backend failures raise
    :class:`scalekit.core.errors.StoreUnavailable` naming the (masked) URL.
    """

    #: A short name for logs and errors: "redis", "file", ...
    kind = "store"

    @renamed_keyword("app", "app_name")
    def __init__(self, app_name: str = "app"):
        self.app_name = check_app_name(app_name)

    @property
    def app(self) -> str:
        """The former name of :attr:`app_name`, read-only, kept for one release."""
        warnings.warn("SessionStore.app is now app_name", DeprecationWarning, stacklevel=2)
        return self.app_name

    @classmethod
    @abc.abstractmethod
    def from_url(
        cls, settings: BackendURL, app_name: str = "app", *, create: bool = True, **options: Any
    ) -> SessionStore:
        """Open the store from parsed URL settings; keyword options override URL options.
        ``create=False``: the store must exist (see :func:`~scalekit.sessions.open_store`)."""

    # -- the protocol -------------------------------------------------------------------
    @abc.abstractmethod
    def load(self, sid: str) -> Record | None:
        """The record of ``sid``, or ``None`` if there is none or it has expired."""

    @abc.abstractmethod
    def save(self, sid: str, data: bytes, ttl: int | None, expected: Any) -> bool:
        """Store ``data`` if the stored version is still ``expected``; ``False`` on conflict.

        ``expected=None`` creates: it succeeds only if ``sid`` has no (live) record.
        ``expected=ANY`` writes unconditionally. A successful save also counts as a touch.
        """

    @abc.abstractmethod
    def touch(self, sid: str, ttl: int | None) -> None:
        """Refresh the record's expiry and ``touched_at`` without rewriting its payload."""

    @abc.abstractmethod
    def delete(self, sid: str) -> None:
        """Remove the record of ``sid`` (no error if it is already gone)."""

    # -- the session's lease (its lock in locking mode), named as the cache's leases --------
    @abc.abstractmethod
    def try_lease(self, sid: str, token: str, ttl: float) -> bool:
        """Take the lease (lock) of ``sid`` for ``ttl`` seconds if nobody holds a live one;
        true if taken. A lease whose holder died expires after ``ttl``."""

    @abc.abstractmethod
    def release_lease(self, sid: str, token: str) -> None:
        """Release the lease of ``sid`` if ``token`` still holds it (never someone else's)."""

    def try_lock(self, sid: str, token: str, ttl: float) -> bool:
        """Deprecated name of :meth:`try_lease`; goes in the next release."""
        warnings.warn("SessionStore.try_lock is now try_lease", DeprecationWarning, stacklevel=2)
        return self.try_lease(sid, token, ttl)

    def unlock(self, sid: str, token: str) -> None:
        """Deprecated name of :meth:`release_lease`; goes in the next release."""
        warnings.warn("SessionStore.unlock is now release_lease", DeprecationWarning, stacklevel=2)
        self.release_lease(sid, token)

    @abc.abstractmethod
    def cleanup(
        self,
        cutoff: float,
        *,
        force: bool = False,
        dry_run: bool = False,
        batch: int = 1000,
        progress: Progress | None = None,
    ) -> CleanupStats:
        """Delete expired sessions in batches (the work of ``sessions2trash``).

        A session is expired when its stored expiry has passed or, when it has none or
        ``force`` is set, when it was last saved or touched before ``cutoff`` (a Unix time).
        The test is repeated in the same atomic step that deletes, so a session saved or
        touched meanwhile is never deleted. Leftovers (expired locks, stale temp files) go
        too. ``dry_run`` only counts; ``progress`` is called after each batch.
        """

    def close(self) -> None:  # noqa: B027 (optional: stores without clients keep it empty)
        """Release clients and connections of this process (they reopen on next use)."""

    # -- py4web's session storage API --------------------------------------------------
    def get(self, key: str | bytes) -> str | None:
        """py4web: the stored value of ``key`` (a str), or ``None``. py4web passes its
        cookie's value, as bytes: one that is not a session id reads as no session."""
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if not is_session_id(key):
            log.debug("py4web session key ignored: malformed %r", key)
            return None
        record = self.load(key)
        return None if record is None else record.data.decode("utf-8")

    def set(self, key: str, value: str, expiration: int | None = None) -> None:
        """py4web: store ``value`` under ``key`` for ``expiration`` seconds."""
        self.save(check_session_id(key), value.encode("utf-8"), expiration, ANY)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} app_name={self.app_name!r}>"


def ttl_seconds(ttl: int | None) -> int | None:
    """A session TTL (see :func:`~scalekit.core.checks.check_ttl`) in whole seconds."""
    seconds = check_ttl(ttl, "session TTL")
    return None if seconds is None else int(seconds) or 1


def now() -> float:
    """The current Unix time; stores use this one clock so tests can reason about it."""
    return time.time()


def check_payload(data: Any) -> bytes:
    """The payload as ``bytes``: stores keep bytes the session layer already serialized."""
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if not isinstance(data, bytes):
        raise InvalidArgumentType(f"a session payload must be bytes, not {type(data).__name__}")
    return data
