"""Memcached session store: consistent hashing over the nodes, one round trip per load.

Layout, for app ``shop`` and session ``S``; all three keys live on the same node, the one
rendezvous hashing picks for the record key, so one request talks to one node:

* ``scalekit:s:shop:S`` — the record: a 16-byte header (magic ``SKs1``, saved-at time as a
  double, TTL as uint32, 0 for none) followed by the opaque payload. Its version is the
  node's name and the record's memcached CAS unique (they count per server, so a version
  from a node that has left the ring never matches on another): ``save`` is ``add``
  (create), ``set`` (any) or ``cas``.
* ``scalekit:t:shop:S`` — the last touch: magic ``SKt1`` and the touched-at time.
  ``touched_at`` is the later of the two times, so a save needs no write here.
* ``scalekit:l:shop:S`` — the lock: the holder's token, taken with ``add`` and a TTL.

TTLs: memcached's clock ticks in whole seconds, so an item given N seconds expires after
N-1 to N of them. Every exptime sent is the TTL (rounded up, at least 1 s) plus one second:
records and locks live at least their TTL and at most a second longer, and a lock never
lapses while its holder still counts on it. TTLs are relative (at most 30 days: memcached
reads more as a Unix time).

Why a touch key: ``touch`` must refresh the expiry and ``touched_at`` without rewriting the
payload and without changing the version (a writer that loaded before the touch still wins
its ``cas``). Memcached's ``touch`` (and ``gat``) keep the CAS unique but cannot change the
stored bytes, so the time has to live elsewhere; rewriting the record would copy the payload
and change the CAS. The touch key costs no extra round trip: ``load`` fetches both keys with
one ``gets`` (both are on one node), and ``touch`` sends ``set`` of the touch key with
``noreply`` then ``touch`` of the record on the same connection and waits once.

Round trips: ``load``, ``save``, ``touch``, ``delete`` and ``try_lease`` one each; ``release_lease``
two (the connector's compare-and-delete: ``gets`` the lock, then ``cas`` it with a negative
exptime, so it never removes a lock someone else took meanwhile).

The client (settings, URL options, placement, node failures, the per-process cluster) and
the lease primitive are :mod:`scalekit.connect.memcache`'s, shared with the memcache cache.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from typing import Any

from pymemcache.client.base import Client

from scalekit.connect.memcache import (
    DEFAULT_MAX_VALUE_SIZE,
    MemcacheClient,
    client_options,
    exptime,
    node_name,
    release_lease,
    take_lease,
)
from scalekit.core.checks import MAX_TTL, check_lease
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError, InvalidArgument, SerializationError, StoreUnavailable
from scalekit.core.urls import BackendURL
from scalekit.sessions.stores.base import (
    ANY,
    CleanupStats,
    Progress,
    Record,
    SessionStore,
    check_payload,
    check_session_id,
    now,
    ttl_seconds,
)

__all__ = ["DEFAULT_MAX_VALUE_SIZE", "MemcacheStore"]

log = logging.getLogger("scalekit.sessions")

_RECORD = struct.Struct("!4sdI")  # magic, saved_at, ttl (0: no expiry)
_RECORD_MAGIC = b"SKs1"
_TOUCH = struct.Struct("!4sd")  # magic, touched_at
_TOUCH_MAGIC = b"SKt1"


class MemcacheStore(MemcacheClient, SessionStore):
    """Sessions in one or more memcached servers (``memcache://h1:11211,h2:11211``).

    Thread-safe (a connection pool per node) and fork-safe (clients are created lazily in
    the process that uses them). Records expire natively; TTLs are relative, at most 30 days.
    ``url`` names the store in errors and logs (``from_url`` passes the masked URL);
    ``client_options`` are those of :class:`~scalekit.connect.memcache.ClientSettings`
    (``timeout``, ``max_value_size``...). The largest value stored is
    :data:`DEFAULT_MAX_VALUE_SIZE` bytes unless ``max_value_size`` says otherwise.
    """

    kind = "memcache"

    @renamed_keyword("app", "app_name")
    def __init__(
        self,
        servers: Iterable[tuple[str, int]],
        app_name: str = "app",
        *,
        url: str | None = None,
        **client_options: Any,
    ):
        super().__init__(app_name)
        self._configure_client(
            servers,
            url,
            client_options,
            min_value_size=_RECORD.size + 1,
            error=StoreUnavailable,
            label="session store",
            logger=log,
        )
        self._prefix = b"scalekit:%s:" + self.app_name.encode("ascii") + b":"

    @classmethod
    @renamed_keyword("app", "app_name")
    def from_url(
        cls, settings: BackendURL, app_name: str = "app", *, create: bool = True, **options: Any
    ) -> MemcacheStore:
        """Open from ``memcache://h1:11211,h2:11211?timeout=0.5``; keywords override the URL.
        ``create`` changes nothing: memcached keeps no store per app."""
        return cls(app_name=app_name, **client_options(settings, options, what="a memcache store"))

    # -- the protocol -------------------------------------------------------------------
    def load(self, sid: str) -> Record | None:
        record_key, touch_key = self._key(b"s", sid), self._key(b"t", sid)
        server, found = self._run(
            "load a session",
            record_key,
            lambda conn: (conn.server, conn.gets_many([record_key, touch_key])),
        )
        if record_key not in found:
            return None
        value, cas = found[record_key]
        if len(value) < _RECORD.size or value[:4] != _RECORD_MAGIC:
            log.warning(
                "session store %s: session %s has a corrupt record (%d bytes, no scalekit "
                "header); treating it as missing",
                self.url, _short(sid), len(value),
            )  # fmt: skip
            return None
        _, saved_at, _ttl = _RECORD.unpack_from(value)
        touched_at = saved_at
        if touch_key in found:
            stamp = found[touch_key][0]
            if len(stamp) == _TOUCH.size and stamp[:4] == _TOUCH_MAGIC:
                touched_at = max(saved_at, _TOUCH.unpack(stamp)[1])
            else:
                log.warning(
                    "session store %s: session %s has a corrupt touch time; using its save time",
                    self.url, _short(sid),
                )  # fmt: skip
        version = (node_name(server), int(cas))
        return Record(data=value[_RECORD.size :], version=version, touched_at=touched_at)

    def save(self, sid: str, data: bytes, ttl: int | None, expected: Any) -> bool:
        key = self._key(b"s", sid)
        ttl = ttl_seconds(ttl)
        expire = exptime(ttl)
        data = check_payload(data)
        value = _RECORD.pack(_RECORD_MAGIC, now(), ttl or 0) + data
        if len(value) > self.max_value_size:
            raise SerializationError(
                f"session store {self.url}: a session of {len(data):,} bytes is over the "
                f"{self.max_value_size - _RECORD.size:,}-byte limit of memcached items; store "
                "less in the session (or start memcached with a bigger -I and raise "
                "max_value_size)"
            )
        if expected is ANY:
            written = self._run(
                "save a session", key, lambda conn: conn.set(key, value, expire, noreply=False)
            )
        elif expected is None:
            written = self._run(
                "create a session", key, lambda conn: conn.add(key, value, expire, noreply=False)
            )
        else:
            loaded_from, cas = _version(expected)

            def command(conn: Client) -> bool | None:
                if node_name(conn.server) != loaded_from:
                    return False  # loaded from a node that has since left or rejoined the ring
                return conn.cas(key, value, cas, expire, noreply=False)

            written = self._run("save a session", key, command)
        return written is True

    def touch(self, sid: str, ttl: int | None) -> None:
        record_key, touch_key = self._key(b"s", sid), self._key(b"t", sid)
        expire = exptime(ttl_seconds(ttl))
        stamp = _TOUCH.pack(_TOUCH_MAGIC, now())

        def command(conn: Client) -> None:
            # The set is answered by nothing; the touch's reply, read after it on the same
            # connection, proves the server has processed both.
            conn.set(touch_key, stamp, expire, noreply=True)
            if not conn.touch(record_key, expire, noreply=False):
                conn.delete(touch_key, noreply=True)  # no record: leave no touch time behind

        self._run("touch a session", record_key, command)

    def delete(self, sid: str) -> None:
        record_key, touch_key = self._key(b"s", sid), self._key(b"t", sid)

        def command(conn: Client) -> None:
            conn.delete(touch_key, noreply=True)
            conn.delete(record_key, noreply=False)

        self._run("delete a session", record_key, command)

    def try_lease(self, sid: str, token: str, ttl: float) -> bool:
        record_key, lock_key = self._key(b"s", sid), self._key(b"l", sid)
        expire = exptime(_lock_ttl(check_lease(token, ttl)))
        holder = token.encode("utf-8")
        return self._run(
            "lock a session", record_key, lambda conn: take_lease(conn, lock_key, holder, expire)
        )

    def release_lease(self, sid: str, token: str) -> None:
        record_key, lock_key = self._key(b"s", sid), self._key(b"l", sid)
        if not isinstance(token, str):
            return  # try_lease takes only str tokens: this one holds nothing
        holder = token.encode("utf-8")
        self._run(
            "unlock a session",
            record_key,
            lambda conn: release_lease(conn, lock_key, lambda found: found == holder),
        )

    def cleanup(
        self,
        cutoff: float,
        *,
        force: bool = False,
        dry_run: bool = False,
        batch: int = 1000,
        progress: Progress | None = None,
    ) -> CleanupStats:
        """Nothing to do: memcached drops expired entries (and locks) by itself."""
        return CleanupStats(
            note="memcached expires sessions by itself; nothing to clean up", self_expiring=True
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} app_name={self.app_name!r}>"

    # -- helpers ------------------------------------------------------------------------
    def _key(self, kind: bytes, sid: str) -> bytes:
        return self._prefix % kind + check_session_id(sid).encode("ascii")


def _short(sid: str) -> str:
    """A session id shortened for logs: enough to correlate, too little to hijack."""
    return sid[:6] + "…"


def _version(version: Any) -> tuple[str, int]:
    """``(node, cas unique)``: CAS uniques count per server, so the node is part of it."""
    if (
        isinstance(version, tuple)
        and len(version) == 2
        and isinstance(version[0], str)
        and isinstance(version[1], int)
        and not isinstance(version[1], bool)
        and version[1] >= 0
    ):
        return version
    raise InvalidArgument(f"expected version {version!r:.40} is not one this store's load returned")


def _lock_ttl(ttl: float) -> float:
    """A positive lock TTL (``check_lease``) that memcached can keep: at most 30 days."""
    if ttl > MAX_TTL:
        raise ConfigError(f"lock TTL {ttl!r} must be at most 30 days (memcached's limit)")
    return ttl
