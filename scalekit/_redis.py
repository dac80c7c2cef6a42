"""The Redis client every piece shares: pooled, opened lazily per process, bounded timeouts.

Used by the Redis session store and the Redis cache backend, so both read the same URL
options, connect the same way (TCP, TLS with ``rediss://``, unix sockets) and run their Lua
scripts the same way (``EVALSHA``, loading the script when the server answers NOSCRIPT).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import redis

from scalekit.urls import RedisURL

__all__ = ["REDIS_OPTIONS", "LazyRedis"]

#: URL query options of every Redis backend, with their converters.
REDIS_OPTIONS = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "max_connections": int,
    "ssl_ca_certs": str,
    "ssl_cert_reqs": str,
}


class LazyRedis:
    """A ``redis.Redis`` created on first use in each process (a new pool after a fork).

    Timeouts are short by default so a down server costs about a second per call; hiredis
    parses replies when installed.
    """

    def __init__(
        self,
        settings: RedisURL,
        *,
        socket_timeout: float = 1.0,
        socket_connect_timeout: float = 1.0,
        max_connections: int | None = None,
        ssl_ca_certs: str | None = None,
        ssl_cert_reqs: str = "required",
    ):
        self.settings = settings
        self.pool_options: dict[str, Any] = {
            "db": settings.db,
            "username": settings.username,
            "password": settings.password,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "max_connections": max_connections,
        }
        if settings.unix_socket:
            self.pool_options.update(
                connection_class=redis.UnixDomainSocketConnection, path=settings.unix_socket
            )
        else:
            self.pool_options.update(host=settings.host, port=settings.port)
            if settings.ssl:
                self.pool_options.update(
                    connection_class=redis.SSLConnection,
                    ssl_ca_certs=ssl_ca_certs,
                    ssl_cert_reqs=ssl_cert_reqs,
                )
        self._client: redis.Redis | None = None
        self._client_pid = 0
        self._sha1: dict[str, str] = {}

    @property
    def client(self) -> redis.Redis:
        """This process's client (a new connection pool after a fork)."""
        if self._client_pid != os.getpid():
            self._client = redis.Redis(connection_pool=redis.ConnectionPool(**self.pool_options))
            self._client_pid = os.getpid()
        return self._client

    def script(self, source: str, keys: list[Any], args: list[Any]) -> Any:
        """Run the Lua ``source`` by its SHA1, loading it first where the server lacks it.

        Raises ``redis.RedisError``: callers turn it into their own error.
        """
        sha = self._sha1.get(source)
        if sha is None:
            sha = self._sha1[source] = hashlib.sha1(source.encode()).hexdigest()
        client = self.client
        try:
            return client.evalsha(sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(source)
            return client.evalsha(sha, len(keys), *keys, *args)

    def close(self) -> None:
        """Disconnect this process's pool (a new one opens on next use)."""
        if self._client is not None and self._client_pid == os.getpid():
            self._client.connection_pool.disconnect()
        self._client, self._client_pid = None, 0
