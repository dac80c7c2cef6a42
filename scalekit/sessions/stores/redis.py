"""Redis session store: one hash per session with a native TTL, one round trip per call.

Layout, for app ``shop`` and session ``S``:

* ``scalekit:s:shop:S`` — a hash: ``d`` the payload, ``v`` a random version token, ``t`` the
  time of the last save or touch (ms). Expires natively after the session's TTL.
* ``scalekit:s:shop:index`` — a sorted set of session ids scored by expiry time (ms), so
  ``sessions2trash`` finds expired sessions without ``KEYS``.
* ``scalekit:s:shop:lock:S`` — the session's lock (locking mode): owner token, PX TTL.

``load`` is one ``HGETALL``; ``save`` (compare-and-set), ``touch`` and ``unlock`` are one
Lua script call each, atomic on the server.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import redis

from scalekit.errors import StoreUnavailable
from scalekit.sessions.stores.base import (
    ANY,
    Record,
    SessionStore,
    check_session_id,
    check_ttl,
    merge_options,
    now,
)
from scalekit.urls import RedisURL

# KEYS: session, index. ARGV: expected ('' create only, '*' any, else version), payload,
# ttl ms ('' for none), now ms, new version, session id. Returns 1 if written, 0 on conflict.
_SAVE = """
local current = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == '' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
elseif ARGV[1] ~= '*' and current ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'v', ARGV[5], 't', ARGV[4])
if ARGV[3] == '' then
  redis.call('PERSIST', KEYS[1])
  redis.call('ZADD', KEYS[2], '+inf', ARGV[6])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + tonumber(ARGV[3]), ARGV[6])
end
return 1
"""

# KEYS: session, index. ARGV: ttl ms ('' for none), now ms, session id.
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 't', ARGV[2])
if ARGV[1] == '' then
  redis.call('PERSIST', KEYS[1])
  redis.call('ZADD', KEYS[2], '+inf', ARGV[3])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[1]), ARGV[3])
end
return 1
"""

# KEYS: lock. ARGV: token.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_OPTIONS = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "max_connections": int,
    "ssl_ca_certs": str,
    "ssl_cert_reqs": str,
}


class _Connection(NamedTuple):
    client: redis.Redis
    save: Any
    touch: Any
    unlock: Any


class RedisStore(SessionStore):
    """Sessions in Redis (``redis://``, ``rediss://`` for TLS, ``unix://`` sockets).

    Connections are pooled and opened lazily in the process that uses them (safe with
    gunicorn's ``preload_app``); hiredis parses replies when installed. Timeouts are short
    by default so a down server costs at most about a second per call.
    """

    kind = "redis"

    def __init__(
        self,
        settings: RedisURL,
        app: str = "app",
        *,
        socket_timeout: float = 1.0,
        socket_connect_timeout: float = 1.0,
        max_connections: int | None = None,
        ssl_ca_certs: str | None = None,
        ssl_cert_reqs: str = "required",
    ):
        super().__init__(app)
        self.settings = settings
        self._prefix = f"scalekit:s:{self.app}:"
        self._index = self._prefix + "index"
        self._pool_options: dict[str, Any] = {
            "db": settings.db,
            "username": settings.username,
            "password": settings.password,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "max_connections": max_connections,
        }
        if settings.unix_socket:
            self._pool_options.update(
                connection_class=redis.UnixDomainSocketConnection, path=settings.unix_socket
            )
        else:
            self._pool_options.update(host=settings.host, port=settings.port)
            if settings.ssl:
                self._pool_options.update(
                    connection_class=redis.SSLConnection,
                    ssl_ca_certs=ssl_ca_certs,
                    ssl_cert_reqs=ssl_cert_reqs,
                )
        self._connection: _Connection | None = None
        self._connection_pid = 0

    @classmethod
    def from_url(cls, settings: RedisURL, app: str = "app", **options: Any) -> RedisStore:
        return cls(settings, app, **merge_options(settings, _OPTIONS, options))

    @property
    def redis(self) -> _Connection:
        """This process's client and scripts (a new connection pool after a fork)."""
        if self._connection is None or self._connection_pid != os.getpid():
            client = redis.Redis(connection_pool=redis.ConnectionPool(**self._pool_options))
            self._connection = _Connection(
                client,
                client.register_script(_SAVE),
                client.register_script(_TOUCH),
                client.register_script(_UNLOCK),
            )
            self._connection_pid = os.getpid()
        return self._connection

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"session store {self.settings.masked} failed to {action}: "
                f"{type(exc).__name__}: {exc}; check that Redis is running and reachable"
            ) from None

    def load(self, sid: str) -> Record | None:
        key = self._prefix + check_session_id(sid)
        with self._errors("load a session"):
            fields = self.redis.client.hgetall(key)
        if b"d" not in fields:
            return None
        return Record(fields[b"d"], fields[b"v"], int(fields[b"t"]) / 1000)

    def save(self, sid: str, data: bytes, ttl: int | None, expected: Any) -> bool:
        key = self._prefix + check_session_id(sid)
        if expected is None:
            expected_arg: Any = ""
        elif expected is ANY:
            expected_arg = "*"
        else:
            expected_arg = expected
        ttl_ms = _ttl_ms(ttl)
        version = os.urandom(9).hex()
        with self._errors("save a session"):
            written = self.redis.save(
                keys=[key, self._index],
                args=[expected_arg, data, ttl_ms, _now_ms(), version, sid],
            )
        return written == 1

    def touch(self, sid: str, ttl: int | None) -> None:
        key = self._prefix + check_session_id(sid)
        with self._errors("touch a session"):
            self.redis.touch(keys=[key, self._index], args=[_ttl_ms(ttl), _now_ms(), sid])

    def delete(self, sid: str) -> None:
        key = self._prefix + check_session_id(sid)
        with self._errors("delete a session"):
            pipe = self.redis.client.pipeline(transaction=False)
            pipe.delete(key)
            pipe.zrem(self._index, sid)
            pipe.execute()

    def try_lock(self, sid: str, token: str, ttl: float) -> bool:
        key = self._prefix + "lock:" + check_session_id(sid)
        with self._errors("lock a session"):
            return bool(self.redis.client.set(key, token, nx=True, px=max(1, int(ttl * 1000))))

    def unlock(self, sid: str, token: str) -> None:
        key = self._prefix + "lock:" + check_session_id(sid)
        with self._errors("unlock a session"):
            self.redis.unlock(keys=[key], args=[token])

    def close(self) -> None:
        if self._connection is not None and self._connection_pid == os.getpid():
            self._connection.client.connection_pool.disconnect()
        self._connection = None


def _ttl_ms(ttl: int | None) -> int | str:
    ttl = check_ttl(ttl)
    return "" if ttl is None else ttl * 1000


def _now_ms() -> int:
    return int(now() * 1000)
