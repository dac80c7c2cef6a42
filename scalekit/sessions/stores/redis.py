"""Redis session store: one hash per session with a native TTL, one round trip per call.

Layout, for app ``shop`` and session ``S``:

* ``scalekit:s:shop:S`` — a hash: ``d`` the payload, ``v`` a random version token, ``t`` the
  time of the last save or touch (ms). Expires natively after the session's TTL.
* ``scalekit:s:shop:due`` — a sorted set of session ids scored by when each is due for
  cleanup (ms): its expiry time if it has a TTL, else its last save or touch. Every save
  and touch sets the score, so ``sessions2trash`` takes what is due from the low end in
  atomic batches, without ``KEYS`` and without looking at each session.
* ``scalekit:s:shop:lock:S`` — the session's lock (locking mode): owner token, PX TTL.

``load`` is one ``HMGET``; ``save`` (compare-and-set), ``touch`` and ``release_lease`` are one
Lua script call each, atomic on the server. Everything Redis goes through
:mod:`scalekit.connect.redis`: its lean path, its declared-key scripts, its lease (the lock
is that lease) and its key namespace (``s``).
"""

from __future__ import annotations

import os
from typing import Any

import redis

from scalekit.connect.redis import REDIS_OPTIONS, Script, open_redis
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import StoreUnavailable
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

# One cleanup batch, atomic. KEYS: due index. ARGV: key prefix, cutoff ms, phase, dry run
# ('1' or '0'), offset, batch size. Phase "due": the entries scored at or before the cutoff,
# whose sessions are all gone or expired by the -x rule (the score is an expiry time, or a
# last use for a session without TTL): delete them unlooked-at. Phase "forced" (-f): the
# entries after the cutoff, sessions with a TTL still running; delete those unused since
# the cutoff (field t). Returns {examined, sessions deleted, entries of gone sessions
# dropped, entries left in place}. It names the sessions' keys from the prefix and the ids
# it finds: on a Cluster they share the due index's slot through the namespace's hash tag.
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


class RedisStore(SessionStore):
    """Sessions in Redis (``redis://``, ``rediss://`` for TLS, ``unix://`` sockets).

    Connections are pooled and opened lazily in the process that uses them (safe with
    gunicorn's ``preload_app``); hiredis parses replies when installed. Timeouts are short
    by default so a down server costs at most about a second per call.
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
        **redis_options: Any,
    ):
        """``client_cache``: keep this process's reads until Redis says they changed, or
        ``client_cache_max_age`` seconds at most. ``redis_options``: those of
        :data:`~scalekit.connect.redis.REDIS_OPTIONS`."""
        super().__init__(app_name)
        self.client_cache, self.client_cache_max_age = client_cache, client_cache_max_age
        self.settings = settings
        self._redis = open_redis(settings, **redis_options)
        self._prefix = self._redis.namespace("s", self.app_name).prefix
        self._due = self._prefix + "due"

    @classmethod
    @renamed_keyword("app", "app_name")
    def from_url(
        cls, settings: RedisURL, app_name: str = "app", *, create: bool = True, **options: Any
    ) -> RedisStore:
        """``create`` changes nothing: Redis keeps no store per app (an app without sessions
        has no key); :meth:`cleanup` says so when it finds none."""
        spec = {**REDIS_OPTIONS, "client_cache": as_bool, "client_cache_max_age": float}
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

    def _script(self, action: str, script: Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._redis.run(script, keys, args)
        except redis.RedisError as exc:
            raise self._unavailable(action, exc) from None

    def load(self, sid: str) -> Record | None:
        key = self._prefix + check_session_id(sid)
        command = ("HMGET", key, "d", "v", "t")
        try:
            if self.client_cache:
                data, version, saved_ms = self._redis.cached(
                    key, *command, max_age=self.client_cache_max_age
                )
            else:
                data, version, saved_ms = self._redis.call(*command)
        except redis.RedisError as exc:
            raise self._unavailable("load a session", exc) from None
        if data is None:
            return None
        return Record(data, version, int(saved_ms) / 1000)

    def save(self, sid: str, data: bytes, ttl: int | None, expected: Any) -> bool:
        key = self._prefix + check_session_id(sid)
        if expected is None:
            expected_arg: Any = ""
        elif expected is ANY:
            expected_arg = "*"
        else:
            expected_arg = expected
        args = [expected_arg, data, _ttl_ms(ttl), _now_ms(), os.urandom(9).hex(), sid]
        return self._script("save a session", _SAVE, [key, self._due], args) == 1

    def touch(self, sid: str, ttl: int | None) -> None:
        key = self._prefix + check_session_id(sid)
        args = [_ttl_ms(ttl), _now_ms(), sid]
        self._script("touch a session", _TOUCH, [key, self._due], args)

    def delete(self, sid: str) -> None:
        key = self._prefix + check_session_id(sid)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(key)
        pipe.zrem(self._due, sid)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise self._unavailable("delete a session", exc) from None
        finally:
            self._redis.forget(key)  # its cached read goes, whatever the outcome

    def try_lease(self, sid: str, token: str, ttl: float) -> bool:
        key = self._prefix + "lock:" + check_session_id(sid)
        try:
            return self._redis.try_lease(key, token, ttl)
        except redis.RedisError as exc:
            raise self._unavailable("lock a session", exc) from None

    def release_lease(self, sid: str, token: str) -> bool:
        key = self._prefix + "lock:" + check_session_id(sid)
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
        for phase in ("due", "forced") if force else ("due",):
            args, offset = [self._prefix, int(cutoff * 1000), phase, int(dry_run)], 0
            while True:
                examined, deleted, dropped, kept = self._script(
                    "clean up sessions", _CLEANUP, [self._due], [*args, offset, batch]
                )
                stats.examined += examined
                stats.deleted += deleted + dropped
                offset += kept
                if progress is not None and examined:
                    progress(stats)
                if examined < batch:
                    break
        if not stats.examined and not self._has_sessions():
            stats.note = f"no session of app {self.app_name} is stored; is the app name right?"
        return stats

    def _has_sessions(self) -> bool:
        """Whether this app has any session: its index exists while it has one."""
        try:
            return bool(self._redis.call("EXISTS", self._due))
        except redis.RedisError as exc:
            raise self._unavailable("clean up sessions", exc) from None

    def close(self) -> None:
        self._redis.close()


def _ttl_ms(ttl: int | None) -> int | str:
    ttl = ttl_seconds(ttl)
    return "" if ttl is None else ttl * 1000


def _now_ms() -> int:
    return int(now() * 1000)
