"""RedisBackend: entries in Redis with native TTLs, shared by every process and server.

Layout, for app ``shop`` (app names are ``[A-Za-z0-9_]``, so no app's prefix is a prefix of
another's and none holds a glob character):

* ``scalekit:c:shop:v:<key>`` — an entry: a hash with ``f`` (format letter, see
  :mod:`._codec`), ``v`` (the value's bytes), ``t`` (the time it was stored).
* ``scalekit:c:shop:h:<sha256 of key>`` — the same for a key longer than 200 bytes, with the
  key itself in field ``k`` (so ``clear(regex)`` can match it); keys stay bounded.
* ``scalekit:c:shop:l:<key or h:sha256>`` — a single-flight lease: the owner's token, PX TTL.

The same names on every topology: every command and script touches one key, so the names
carry no hash tag and on a Redis Cluster one app's entries spread over every primary (a tag
would put them all in one slot: one hot shard).

A hash rather than a string with a header, so a counter's value is a plain number that
``HINCRBY`` counts on atomically while its store time sits next to it. ``set``/``add`` are one
Lua script call (replace the hash, set its TTL, ``add`` only if absent), ``get`` one
``HMGET``, ``incr`` one script (``HINCRBY``, keeping the TTL). ``clear`` walks this app's
keys with ``SCAN MATCH ... COUNT 1000`` (on every primary of a Cluster) and removes matches
with ``UNLINK``: never ``KEYS`` (blocks the server), never ``FLUSHDB`` (other apps' keys,
sessions). Leases, apart from values, are :mod:`scalekit.connect.redis`'s one lease (``SET
NX PX``, released by a compare-and-delete script), as are the lean path, the scripts, the
scan and the key namespace (``c``). Reads and ``set`` are retried once after a lost
connection (running them twice is harmless); ``add``, ``delete`` and ``incr`` are not.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from time import time
from typing import Any

import redis

from scalekit.cache.backends import _codec
from scalekit.cache.backends.base import CacheBackend, Entry, check_key, check_ttl
from scalekit.connect.redis import REDIS_OPTIONS, Script, open_redis
from scalekit.core.checks import check_lease
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import CacheUnavailable, ConfigError, InvalidArgument, InvalidArgumentType
from scalekit.core.options import merge_options
from scalekit.core.urls import BackendURL, RedisURL

log = logging.getLogger("scalekit.cache")

#: Keys longer than this (UTF-8 bytes) are stored under their SHA-256.
MAX_PLAIN_KEY = 200

# KEYS: entry. ARGV: only if absent ('1'/'0'), format, value, stored_at, ttl ms or '', key
# ('' unless hashed). Returns 1 if stored.
_SET = Script(
    """
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'f', ARGV[2], 'v', ARGV[3], 't', ARGV[4])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'k', ARGV[6]) end
if ARGV[5] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
return 1
""",
    keys=1,
)

# KEYS: entry. ARGV: delta, stored_at, key ('' unless hashed). A missing entry starts at 0
# with no TTL (HINCRBY creates it); an existing one keeps its TTL. Returns the new value.
_INCR = Script(
    """
local f = redis.call('HGET', KEYS[1], 'f')
if f and f ~= 'i' then return redis.error_reply('SKNOTINT the entry holds no int') end
local n = redis.call('HINCRBY', KEYS[1], 'v', ARGV[1])
redis.call('HSET', KEYS[1], 'f', 'i', 't', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'k', ARGV[3]) end
return n
""",
    keys=1,
)

# INFO fields reported by server_stats.
_STATS = (
    "redis_version", "uptime_in_seconds", "connected_clients", "used_memory",
    "used_memory_human", "maxmemory", "maxmemory_policy", "keyspace_hits",
    "keyspace_misses", "evicted_keys", "expired_keys", "total_commands_processed",
)  # fmt: skip


class RedisBackend(CacheBackend):
    """Entries in one Redis database (``redis://``, ``rediss://`` for TLS, ``unix://``),
    behind Sentinels (``redis+sentinel://``) or in a Redis Cluster (``redis+cluster://``).

    The client and its connection pool are created lazily in the process that uses them
    (gunicorn workers); socket timeouts (1 s by default) bound what a down server costs.
    """

    kind = "redis"
    shared = True

    @renamed_keyword("app", "app_name")
    def __init__(
        self,
        settings: RedisURL,
        app_name: str = "app",
        *,
        serializer: str = "json",
        secret: str | bytes | Sequence[str | bytes] | None = None,
        **redis_options: Any,
    ):
        """``redis_options``: those of :data:`~scalekit.connect.redis.REDIS_OPTIONS`."""
        super().__init__(app_name)
        if not isinstance(settings, RedisURL):
            raise ConfigError(f"{settings!s}: a Redis cache needs a redis:// URL")
        self.settings = settings
        self._codec = _codec.Codec(serializer, secret, settings.masked)
        self.serializer = serializer
        self._redis = open_redis(settings, **redis_options)
        self._prefix = self._redis.namespace("c", self.app_name, spread=True).prefix.encode()

    @classmethod
    @renamed_keyword("app", "app_name")
    def from_url(
        cls, settings: BackendURL, app_name: str = "app", *, secret: Any = None, **options: Any
    ) -> RedisBackend:
        """Open ``redis://host:6379/0?socket_timeout=0.5&serializer=pickle``; the ``secret``
        that signs pickles is a keyword only, never in a URL."""
        if not isinstance(settings, RedisURL):
            raise ConfigError(f"{settings.masked}: a Redis cache needs a redis:// URL")
        spec = {**REDIS_OPTIONS, "serializer": str}
        merged = merge_options(settings, spec, options)
        return cls(settings, app_name=app_name, secret=secret, **merged)

    def __repr__(self) -> str:
        return f"<RedisBackend {self.settings.masked} app_name={self.app_name!r}>"

    def close(self) -> None:
        self._redis.close()

    # -- values -------------------------------------------------------------------------
    def get(self, key: str) -> Entry | None:
        name, hashed = self._name(key)
        fields = ("f", "v", "t") if hashed is None else ("f", "v", "t", "k")
        fmt, data, stored_at, *original = self._call("read", "HMGET", name, *fields, safe=True)
        if fmt is None and data is None and stored_at is None:
            return None
        try:
            if original and original[0] != hashed:
                return None  # a SHA-256 collision: not this key's entry
            if fmt is None or data is None or stored_at is None:
                raise _codec.Corrupt("a field of the entry is missing")
            value = self._codec.load(key, fmt.decode("ascii"), data)
            return Entry(value, float(stored_at))
        except (_codec.Corrupt, ValueError, UnicodeDecodeError) as exc:
            log.warning("redis cache %s: entry %r cannot be read (%s); treated as a miss",
                        self.settings.masked, key, exc)  # fmt: skip
            return None

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        self._store(key, value, ttl, only_if_absent=False)

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        return self._store(key, value, ttl, only_if_absent=True)

    def delete(self, key: str) -> bool:
        name, _ = self._name(key)
        return self._call("delete", "DEL", name) > 0

    def incr(self, key: str, delta: int = 1) -> int:
        name, hashed = self._name(key)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise InvalidArgumentType(
                f"increment of {key!r}: the delta must be an int, got {delta!r}"
            )
        args = [delta, repr(time()), hashed or b""]
        try:
            return int(self._redis.run(_INCR, [name], args))
        except redis.ResponseError as exc:
            if "SKNOTINT" in str(exc) or "not an integer" in str(exc) or "overflow" in str(exc):
                raise InvalidArgument(
                    f"cannot increment cache key {key!r}: it holds no 64-bit int"
                ) from None
            raise self._unavailable("increment", exc) from None
        except redis.RedisError as exc:
            raise self._unavailable("increment", exc) from None

    def clear(self, pattern: re.Pattern[str] | None = None) -> int:
        names = self._redis.scan(self._prefix + b"[vh]:*")
        if pattern is not None:
            names = (name for name in names if self._matches(name, pattern))
        try:
            return self._redis.unlink(names)  # in batches, as the scan goes
        except redis.RedisError as exc:
            raise self._unavailable("clear", exc) from None

    def _matches(self, name: bytes, pattern: re.Pattern[str]) -> bool:
        """Whether the key of the entry ``name`` matches (a hashed one's is in field ``k``)."""
        start = len(self._prefix)
        raw = name[start + 2 :]
        if name[start : start + 2] == b"h:":
            raw = self._redis.call("HGET", name, "k", safe=True)
            if raw is None:
                return False  # gone meanwhile
        return pattern.match(raw.decode("utf-8", "surrogatepass")) is not None

    # -- leases -------------------------------------------------------------------------
    def try_lease(self, key: str, token: str, ttl: float) -> bool:
        ttl = check_lease(token, ttl)
        try:
            return self._redis.try_lease(self._lease_name(key), token, ttl)
        except redis.RedisError as exc:
            raise self._unavailable("lease", exc) from None

    def release_lease(self, key: str, token: str) -> bool:
        try:
            return self._redis.release_lease(self._lease_name(key), token)
        except redis.RedisError as exc:
            raise self._unavailable("release a lease", exc) from None

    def server_stats(self) -> dict[str, Any]:
        """Selected ``INFO`` fields and this database's key count; on a Cluster, those of
        each primary, by its ``host:port`` (as memcached's are by node)."""
        try:
            client = self._redis.client
            if self._redis.topology.routes:
                infos = client.info(target_nodes=client.PRIMARIES)
                return {node: self._stats(info) for node, info in infos.items()}
            return self._stats(client.info())
        except redis.RedisError as exc:
            raise self._unavailable("read stats", exc) from None

    # -- helpers ------------------------------------------------------------------------
    def _name(self, key: str) -> tuple[bytes, bytes | None]:
        """The Redis key of ``key``'s entry, and the key's bytes if they had to be hashed."""
        raw = check_key(key).encode("utf-8", "surrogatepass")
        if len(raw) <= MAX_PLAIN_KEY:
            return self._prefix + b"v:" + raw, None
        return self._prefix + b"h:" + hashlib.sha256(raw).hexdigest().encode("ascii"), raw

    def _stats(self, info: dict[str, Any]) -> dict[str, Any]:
        """The :data:`_STATS` fields of one server's ``INFO``, and its key count."""
        stats = {name: info[name] for name in _STATS if name in info}
        stats["db_keys"] = info.get(f"db{self.settings.db}", {}).get("keys", 0)
        return stats

    def _lease_name(self, key: str) -> bytes:
        name, _ = self._name(key)
        return self._prefix + b"l:" + name[len(self._prefix) :]

    def _store(self, key: str, value: Any, ttl: float | None, only_if_absent: bool) -> bool:
        name, hashed = self._name(key)
        ttl = check_ttl(ttl)
        fmt, data = self._codec.dump(key, value)
        ttl_ms = "" if ttl is None else max(1, int(ttl * 1000))
        args = [int(only_if_absent), fmt, data, repr(time()), ttl_ms, hashed or b""]
        try:
            return self._redis.run(_SET, [name], args, safe=not only_if_absent) == 1
        except redis.RedisError as exc:
            raise self._unavailable("write", exc) from None

    def _call(self, action: str, *command: Any, safe: bool = False) -> Any:
        try:
            return self._redis.call(*command, safe=safe)
        except redis.RedisError as exc:
            raise self._unavailable(action, exc) from None

    def _unavailable(self, action: str, exc: Exception) -> CacheUnavailable:
        return CacheUnavailable(
            f"redis cache {self.settings.masked}: cannot {action}: {type(exc).__name__}: "
            f"{exc}; check that Redis is running and reachable"
        )
