"""Where a connector's commands go: the topology seam.

A :class:`Topology` makes redis-py connections and clients; the connector and the pieces
never see hosts, ports, TLS or sockets. :class:`Standalone` is one server.
:class:`Sentinel`'s connections go to the primary the Sentinels name. Cluster is one
that also sets :attr:`Topology.hash_tags`: each piece's keys for one app then share a slot,
and its scripts, which declare every key they touch, can run on the node that holds it
(routing there is that topology's work).
"""

from __future__ import annotations

import abc
from typing import Any

import redis
import redis.sentinel

from scalekit.core.urls import RedisURL, SentinelURL

__all__ = ["Sentinel", "Standalone", "Topology"]


class Topology(abc.ABC):
    """The connection options every topology takes (:data:`REDIS_OPTIONS`), and the two
    things a connector asks of it: a new connection, and a new redis-py client."""

    #: Whether the pieces' keys carry a hash tag (``{app}``): a Cluster needs them.
    hash_tags = False

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
        self.where = settings.masked  # for messages: the URL, password hidden
        self.socket_timeout = socket_timeout
        self.socket_connect_timeout = socket_connect_timeout
        self.max_connections = max_connections
        self.ssl_ca_certs, self.ssl_cert_reqs = ssl_ca_certs, ssl_cert_reqs
        #: What every connection to a data server takes: database, credentials, timeouts.
        self.connection_options: dict[str, Any] = {
            "db": settings.db,
            "username": settings.username,
            "password": settings.password,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
        }

    @abc.abstractmethod
    def connection(self) -> redis.connection.AbstractConnection:
        """A new, unconnected RESP2 connection to the server that takes commands."""

    @abc.abstractmethod
    def client(self) -> redis.Redis:
        """A new redis-py client with a pool of its own, for multi-command work
        (pipelines, ``SCAN``, ``INFO``)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.where}>"


class Standalone(Topology):
    """One server: TCP, TLS (``rediss://``) or a unix socket (``unix://``); redis-py does
    the handshake (AUTH, SELECT) on every new connection."""

    def __init__(self, settings: RedisURL, **options: Any):
        super().__init__(settings, **options)
        self._options = dict(self.connection_options)
        if settings.unix_socket:
            self._class: type[redis.connection.AbstractConnection] = (
                redis.UnixDomainSocketConnection
            )
            self._options["path"] = settings.unix_socket
        else:
            self._options.update(host=settings.host, port=settings.port)
            self._class = redis.Connection
            if settings.ssl:
                self._class = redis.SSLConnection
                self._options.update(
                    ssl_ca_certs=self.ssl_ca_certs, ssl_cert_reqs=self.ssl_cert_reqs
                )

    def connection(self) -> redis.connection.AbstractConnection:
        return self._class(protocol=2, **self._options)

    def client(self) -> redis.Redis:
        pool = redis.ConnectionPool(
            connection_class=self._class, max_connections=self.max_connections, **self._options
        )
        return redis.Redis(connection_pool=pool)


class Sentinel(Topology):
    """The primary that Redis Sentinels name for a service (``redis+sentinel://``).

    Every new connection asks the Sentinels, in turn, where the primary is, so after a
    failover the connections made to replace the lost ones go to the promoted replica; the
    client's pool (redis-py's ``SentinelConnectionPool``) does the same. While no Sentinel
    names a healthy primary, connecting raises ``MasterNotFoundError``, a
    ``redis.ConnectionError``. A primary demoted while running drops its clients (Sentinel
    kills their connections as it reconfigures it), so they reconnect to the new one.
    """

    def __init__(self, settings: SentinelURL, **options: Any):
        super().__init__(settings, **options)
        self.service = settings.service
        self._sentinels = redis.sentinel.Sentinel(
            settings.sentinels,
            sentinel_kwargs={
                "password": settings.sentinel_password,
                "socket_timeout": self.socket_timeout,
                "socket_connect_timeout": self.socket_connect_timeout,
            },
            **self.connection_options,
        )

    def connection(self) -> redis.connection.AbstractConnection:
        host, port = self._sentinels.discover_master(self.service)
        return redis.Connection(host=host, port=port, protocol=2, **self.connection_options)

    def client(self) -> redis.Redis:
        return self._sentinels.master_for(self.service, max_connections=self.max_connections)
