"""Redis session store: one hash per session with a native TTL, one round trip per call.

Layout, for app ``shop`` and session ``S`` on one Redis or behind Sentinels:

* ``scalekit:s:shop:S`` — a hash: ``d`` the payload, ``v`` a random version token, ``t`` the
  time of the last save or touch (ms). Expires natively after the session's TTL.
* ``scalekit:s:shop:due`` — a sorted set of session ids scored by when each is due for
  cleanup (ms): its expiry time if it has a TTL, else its last save or touch. Every save
  and touch sets the score, so ``sessions2trash`` takes what is due from the low end in
  atomic batches, without ``KEYS`` and without looking at each session.
* ``scalekit:s:shop:lock:S`` — the session's lock (locking mode): owner token, PX TTL.

On a Cluster one app's sessions spread over :data:`BUCKETS` buckets, so over every primary:
session ``S`` is in bucket ``n = crc32(S) % 64``, its keys ``scalekit:s:{shop:n}:S``,
``scalekit:s:{shop:n}:due`` and ``scalekit:s:{shop:n}:lock:S``; the hash tag puts a session,
its lock and its bucket's index in one slot, so every script runs on one node.

``load`` is one ``HMGET``; ``save`` (compare-and-set), ``touch``, ``delete`` and
``release_lease`` are one Lua script call each, atomic on the server; with ``min_replicas``
a write also waits (``WAIT``) until that many replicas have it. Everything Redis goes
through :mod:`scalekit.connect.redis`: its lean path, its declared-key scripts, its retries
after a failover, its lease (the lock is that lease) and its key namespace (``s``).
:meth:`RedisStore.copy_to` copies an app's sessions into another Redis store of any
topology, create-only (``scalekit sessions copy``: moving to a Cluster signs nobody out).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from scalekit.connect.redis import REDIS_OPTIONS, NotReplicated, RedisConnector, Script, open_redis
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.core.options import as_bool, merge_options
from scalekit.core.urls import RedisURL
from scalekit.sessions.stores.base import (
    ANY,
    CleanupStats,
    Progress,
    Record,
    SessionStore,
    check_session_id,
    now,
    ttl_seconds,
)

# KEYS: session, due index. ARGV: expected ('' create only, '*' any, else version), payload,
# ttl ms ('' for none), now ms, new version, session id. Returns 1 if written, 0 on conflict.
_SAVE = Script(
    """
local current = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == '' then
  if current then return 0 end
elseif ARGV[1] ~= '*' and current ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'v', ARGV[5], 't', ARGV[4])
if ARGV[3] == '' then
  redis.call('PERSIST', KEYS[1])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + tonumber(ARGV[3]), ARGV[6])
end
return 1
""",
    keys=2,
)

# KEYS: session, due index. ARGV: ttl ms ('' for none), now ms, session id.
_TOUCH = Script(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 't', ARGV[2])
if ARGV[1] == '' then
  redis.call('PERSIST', KEYS[1])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[1]), ARGV[3])
end
return 1
""",
    keys=2,
)

# KEYS: session, due index. ARGV: session id.
_DELETE = Script(
    """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
""",
    keys=2,
)

# One cleanup batch, atomic. KEYS: due index. ARGV: key prefix, cutoff ms, phase, dry run
# ('1' or '0'), offset, batch size. Phase "due": the entries scored at or before the cutoff,
# whose sessions are all gone or expired by the -x rule (the score is an expiry time, or a
# last use for a session without TTL): delete them unlooked-at. Phase "forced" (-f): the
# entries after the cutoff, sessions with a TTL still running; delete those unused since
# the cutoff (field t). Returns {examined, sessions deleted, entries of gone sessions
# dropped, entries left in place}. It names the sessions' keys from the prefix and the ids
# it finds: on a Cluster they share the due index's slot through the bucket's hash tag.
_CLEANUP = Script(
    """
local cutoff, forced, dry = ARGV[2], ARGV[3] == 'forced', ARGV[4] == '1'
local low, high = '-inf', cutoff
if forced then low, high = '(' .. cutoff, '+inf' end
local sids = redis.call('ZRANGE', KEYS[1], low, high, 'BYSCORE', 'LIMIT', ARGV[5], ARGV[6])
local doomed, gone = sids, {}
if forced then
  doomed = {}
  for _, sid in ipairs(sids) do
    local used = redis.call('HGET', ARGV[1] .. sid, 't')
    if not used then
      gone[#gone + 1] = sid
    elseif tonumber(used) <= tonumber(cutoff) then
      doomed[#doomed + 1] = sid
    end
  end
end
local deleted = 0
for first = 1, #doomed, 1000 do
  local last, keys = math.min(first + 999, #doomed), {}
  for i = first, last do keys[#keys + 1] = ARGV[1] .. doomed[i] end
  if dry then
    deleted = deleted + redis.call('EXISTS', unpack(keys))
  else
    deleted = deleted + redis.call('DEL', unpack(keys))
    redis.call('ZREM', KEYS[1], unpack(doomed, first, last))
  end
end
for first = 1, #gone, 1000 do
  if not dry then redis.call('ZREM', KEYS[1], unpack(gone, first, math.min(first + 999, #gone))) end
end
local dropped = #doomed - deleted + #gone
if dry then return {#sids, deleted, dropped, #sids} end
return {#sids, deleted, dropped, #sids - #doomed - #gone}
""",
    keys=1,
)

# One batch of a bucket's sessions to copy, read at one instant. KEYS: due index. ARGV: key
# prefix, lowest score (inclusive), batch size, then the ids already read at that score.
# Returns {entries in range, {id, due score, d, v, t, PTTL}...} (d false: the session is gone).
_EXPORT = Script(
    """
local seen = {}
for i = 4, #ARGV do seen[ARGV[i]] = true end
local limit = tonumber(ARGV[3]) + #ARGV - 3
local range = redis.call('ZRANGE', KEYS[1], ARGV[2], '+inf', 'BYSCORE', 'LIMIT', 0, limit,
  'WITHSCORES')
local rows = {}
for i = 1, #range, 2 do
  if not seen[range[i]] then
    local key = ARGV[1] .. range[i]
    local d, v, t = unpack(redis.call('HMGET', key, 'd', 'v', 't'))
    rows[#rows + 1] = {range[i], range[i + 1], d, v, t, redis.call('PTTL', key)}
  end
end
return {#range / 2, rows}
""",
    keys=1,
)

# Create-only writes of sessions of one bucket. KEYS: due index. ARGV: key prefix, dry run
# ('1' or '0'), then per session: id, d, v, t, ttl ms ('' for none), due score. A session
# that exists is left as it is. Returns how many were (dry: would be) written.
_IMPORT = Script(
    """
local written = 0
for i = 3, #ARGV, 6 do
  local key = ARGV[1] .. ARGV[i]
  if redis.call('EXISTS', key) == 0 then
    written = written + 1
    if ARGV[2] == '0' then
      redis.call('HSET', key, 'd', ARGV[i + 1], 'v', ARGV[i + 2], 't', ARGV[i + 3])
      if ARGV[i + 4] ~= '' then redis.call('PEXPIRE', key, ARGV[i + 4]) end
      redis.call('ZADD', KEYS[1], ARGV[i + 5], ARGV[i])
    end
  end
end
return written
""",
    keys=1,
)


@dataclass
class CopyStats:
    """What :meth:`RedisStore.copy_to` did (dry: would do)."""

    copied: int = 0
    #: Sessions already in the target, left as they are there.
    existing: int = 0
    #: Sessions in the index that expired or went before they were read.
    gone: int = 0
    #: An app with no session at all.
    note: str = ""


#: How many buckets one app's sessions spread over on a Cluster.
BUCKETS = 64


class Layout:
    """Where one app's sessions live: the key :attr:`prefixes` of its buckets, one on a
    single Redis or behind Sentinels (``scalekit:s:<app>:``, the layout of every earlier
    version: an upgrade logs nobody out), :data:`BUCKETS` on a Cluster
    (``scalekit:s:{<app>:<n>}:``). A bucket holds its sessions, their locks and its due
    index (``<prefix>due``); session ``S`` is in bucket ``crc32(S) % len(prefixes)``."""

    __slots__ = ("prefixes",)

    def __init__(self, connector: RedisConnector, app_name: str):
        if connector.topology.hash_tags:
            names = [f"{app_name}:{n}" for n in range(BUCKETS)]
        else:
            names = [app_name]
        self.prefixes = [connector.namespace("s", name).prefix for name in names]

    def prefix(self, sid: str) -> str:
        """The key prefix of the bucket that session ``sid`` (a checked id) is in."""
        prefixes = self.prefixes
        if len(prefixes) == 1:  # a single Redis, Sentinel: no hashing per request
            return prefixes[0]
        return prefixes[zlib.crc32(sid.encode()) % len(prefixes)]


class RedisStore(SessionStore):
    """Sessions in Redis (``redis://``, ``rediss://`` for TLS, ``unix://`` sockets), behind
    Sentinels (``redis+sentinel://``) or on a Cluster (``redis+cluster://``).

    Connections are pooled and opened lazily in the process that uses them (safe with
    gunicorn's ``preload_app``); hiredis parses replies when installed. Timeouts are short
    by default so a down server costs at most about a second per call. Loads, saves,
    touches, deletes and cleanups are retried once after a failover; locks are not.
    """

    kind = "redis"

    @renamed_keyword("app", "app_name")
    def __init__(
        self,
        settings: RedisURL,
        app_name: str = "app",
        *,
        client_cache: bool = False,
        client_cache_max_age: float = 5.0,
        min_replicas: int = 0,
        replica_timeout: float = 0.5,
        **redis_options: Any,
    ):
        """``client_cache``: keep this process's reads until Redis says they changed, or
        ``client_cache_max_age`` seconds at most. ``min_replicas``: a save, touch or delete
        succeeds only once that many replicas have it (``WAIT``, up to ``replica_timeout``
        seconds), so it survives the loss of the primary.
        ``redis_options``: those of :data:`~scalekit.connect.redis.REDIS_OPTIONS`."""
        super().__init__(app_name)
        if min_replicas < 0 or replica_timeout <= 0:
            raise ConfigError(
                f"{settings.masked}: min_replicas={min_replicas!r} must be 0 or more and "
                f"replica_timeout={replica_timeout!r} more than 0 seconds"
            )
        self.client_cache, self.client_cache_max_age = client_cache, client_cache_max_age
        self.min_replicas, self.replica_timeout = min_replicas, replica_timeout
        self.settings = settings
        self._redis = open_redis(settings, **redis_options)
        self.layout = Layout(self._redis, self.app_name)

    @classmethod
    @renamed_keyword("app", "app_name")
    def from_url(
        cls, settings: RedisURL, app_name: str = "app", *, create: bool = True, **options: Any
    ) -> RedisStore:
        """``create`` changes nothing: Redis keeps no store per app (an app without sessions
        has no key); :meth:`cleanup` says so when it finds none."""
        spec = {
            **REDIS_OPTIONS,
            "client_cache": as_bool,
            "client_cache_max_age": float,
            "min_replicas": int,
            "replica_timeout": float,
        }
        return cls(settings, app_name, **merge_options(settings, spec, options))

    @property
    def client(self) -> redis.Redis:
        """This process's redis-py client (a new connection pool after a fork)."""
        return self._redis.client

    def _unavailable(self, action: str, exc: redis.RedisError) -> StoreUnavailable:
        return StoreUnavailable(
            f"session store {self.settings.masked} failed to {action}: "
            f"{type(exc).__name__}: {exc}; check that Redis is running and reachable"
        )

    def _run(
        self, action: str, script: Script, keys: list[str], args: list[Any], replicas: int = 0
    ) -> Any:
        """Run ``script``, retried once after a failover; with ``replicas``, a success once
        that many replicas have its writes."""
        try:
            return self._redis.run(
                script, keys, args, safe=True, replicas=replicas,
                replica_timeout=self.replica_timeout,
            )  # fmt: skip
        except NotReplicated as exc:
            raise StoreUnavailable(
                f"session store {self.settings.masked} failed to {action} on "
                f"{replicas} replica(s) within {self.replica_timeout:g}s (min_replicas): "
                f"{exc}; check the replicas and their links to the primary"
            ) from None
        except redis.RedisError as exc:
            raise self._unavailable(action, exc) from None

    def load(self, sid: str) -> Record | None:
        sid = check_session_id(sid)
        key = self.layout.prefix(sid) + sid
        command = ("HMGET", key, "d", "v", "t")
        try:
            if self.client_cache:
                data, version, saved_ms = self._redis.cached(
                    key, *command, max_age=self.client_cache_max_age
                )
            else:
                data, version, saved_ms = self._redis.call(*command, safe=True)
        except redis.RedisError as exc:
            raise self._unavailable("load a session", exc) from None
        if data is None:
            return None
        return Record(data, version, int(saved_ms) / 1000)

    def save(self, sid: str, data: bytes, ttl: int | None, expected: Any) -> bool:
        if expected is None:
            expected_arg: Any = ""
        elif expected is ANY:
            expected_arg = "*"
        else:
            expected_arg = expected
        args = [expected_arg, data, _ttl_ms(ttl), _now_ms(), os.urandom(9).hex(), sid]
        return self._write("save a session", _SAVE, sid, args) == 1

    def touch(self, sid: str, ttl: int | None) -> None:
        self._write("touch a session", _TOUCH, sid, [_ttl_ms(ttl), _now_ms(), sid])

    def delete(self, sid: str) -> None:
        self._write("delete a session", _DELETE, sid, [sid])

    def _write(self, action: str, script: Script, sid: str, args: list[Any]) -> Any:
        """Run ``script`` on session ``sid``'s key and its bucket's due index."""
        prefix = self.layout.prefix(check_session_id(sid))
        return self._run(action, script, [prefix + sid, prefix + "due"], args, self.min_replicas)

    def try_lease(self, sid: str, token: str, ttl: float) -> bool:
        key = self._lock_key(sid)
        try:
            return self._redis.try_lease(key, token, ttl)
        except redis.RedisError as exc:
            raise self._unavailable("lock a session", exc) from None

    def release_lease(self, sid: str, token: str) -> bool:
        key = self._lock_key(sid)
        try:
            return self._redis.release_lease(key, token)
        except redis.RedisError as exc:
            raise self._unavailable("unlock a session", exc) from None

    def cleanup(
        self,
        cutoff: float,
        *,
        force: bool = False,
        dry_run: bool = False,
        batch: int = 1000,
        progress: Progress | None = None,
    ) -> CleanupStats:
        """Take what is due from the low end of the index, each batch one atomic script.

        Sessions with a TTL need no help: Redis deletes them itself and this only drops
        their index entries. Sessions without a TTL go once unused since ``cutoff``; with
        ``force``, also those with a TTL still running, which costs a look at each one.
        An app with no session at all (its index is gone: a mistyped app name?) is noted.
        """
        stats = CleanupStats()
        for prefix in self.layout.prefixes:
            for phase in ("due", "forced") if force else ("due",):
                args, offset = [prefix, int(cutoff * 1000), phase, int(dry_run)], 0
                while True:
                    examined, deleted, dropped, kept = self._run(
                        "clean up sessions", _CLEANUP, [prefix + "due"], [*args, offset, batch]
                    )
                    stats.examined += examined
                    stats.deleted += deleted + dropped
                    offset += kept
                    if progress is not None and examined:
                        progress(stats)
                    if examined < batch:
                        break
        if not stats.examined:
            stats.note = self._no_sessions_note("clean up sessions")
        return stats

    def copy_to(
        self,
        target: RedisStore,
        *,
        dry_run: bool = False,
        batch: int = 1000,
        progress: Callable[[CopyStats], None] | None = None,
    ) -> CopyStats:
        """Copy this app's sessions into ``target`` (any topology, in its layout): the
        fields, the remaining TTL and the due score as they are here. Create-only: a session
        already in ``target`` (saved there meanwhile) is left as it is, so a second run
        copies nothing. This store is only read, in batches walked up its due indexes by
        score (one atomic script per batch, no ``KEYS``); sessions gone by then are skipped.
        ``dry_run`` counts and writes nothing; ``progress`` gets the totals after each batch.
        """
        stats = CopyStats()
        for prefix in self.layout.prefixes:
            lowest, seen = b"-inf", []
            while True:
                limit = batch + len(seen)
                ranged, rows = self._run(
                    "read sessions", _EXPORT, [prefix + "due"], [prefix, lowest, batch, *seen]
                )
                if rows:
                    self._copy_rows(target, rows, dry_run, stats)
                    score = rows[-1][1]
                    ties = [row[0] for row in rows if row[1] == score]
                    seen = seen + ties if score == lowest else ties
                    lowest = score
                    if progress is not None:
                        progress(stats)
                if ranged < limit:
                    break
        if not stats.copied + stats.existing + stats.gone:
            stats.note = self._no_sessions_note("read sessions")
        return stats

    def _copy_rows(self, target: RedisStore, rows: list, dry_run: bool, stats: CopyStats) -> None:
        """Write the sessions ``_EXPORT`` read into ``target``, create-only, one script per
        bucket of ``target``'s layout."""
        buckets: dict[str, list] = {}
        for sid, score, data, version, used_ms, pttl in rows:
            if data is None or pttl == 0:  # expired or deleted since it was indexed
                stats.gone += 1
                continue
            sid = sid.decode()
            ttl = "" if pttl == -1 else pttl
            buckets.setdefault(target.layout.prefix(sid), []).extend(
                (sid, data, version, used_ms, ttl, score)
            )
        for prefix, args in buckets.items():
            written = target._run(
                "copy sessions", _IMPORT, [prefix + "due"], [prefix, int(dry_run), *args],
                0 if dry_run else target.min_replicas,
            )  # fmt: skip
            stats.copied += written
            stats.existing += len(args) // 6 - written

    def _no_sessions_note(self, action: str) -> str:
        """A note when this app has no session at all (a bucket's index exists while it
        has one: a mistyped app name?), else ``""``."""
        try:
            found = any(
                self._redis.call("EXISTS", prefix + "due", safe=True)
                for prefix in self.layout.prefixes
            )
        except redis.RedisError as exc:
            raise self._unavailable(action, exc) from None
        if found:
            return ""
        return f"no session of app {self.app_name} is stored; is the app name right?"

    def _lock_key(self, sid: str) -> str:
        sid = check_session_id(sid)
        return self.layout.prefix(sid) + "lock:" + sid

    def close(self) -> None:
        self._redis.close()


def _ttl_ms(ttl: int | None) -> int | str:
    ttl = ttl_seconds(ttl)
    return "" if ttl is None else ttl * 1000


def _now_ms() -> int:
    return int(now() * 1000)
