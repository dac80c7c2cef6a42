"""Where a connector's commands go: the topology seam.

A :class:`Topology` makes redis-py connections and clients; the connector and the pieces
never see hosts, ports, TLS or sockets. :class:`Standalone` is one server.
:class:`Sentinel`'s connections go to the primary the Sentinels name. :class:`Cluster`
sets :attr:`Topology.hash_tags` (each piece's keys for one app share a slot, so its scripts,
which declare every key they touch, run on one node) and :attr:`Topology.routes`: the
connector sends each command to the :class:`Node` that holds its key's slot.
"""

from __future__ import annotations

import abc
import threading
import time
from typing import Any

import redis
import redis.cluster
import redis.sentinel
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from scalekit.core.process import after_fork
from scalekit.core.urls import ClusterURL, RedisURL, SentinelURL

__all__ = ["Cluster", "Node", "Sentinel", "Standalone", "Topology", "key_of"]


class Topology(abc.ABC):
    """The connection options every topology takes (:data:`REDIS_OPTIONS`), and the two
    things a connector asks of it: a new connection, and a new redis-py client."""

    #: Whether the pieces' keys carry a hash tag (``{app}``): a Cluster needs them.
    hash_tags = False
    #: Whether commands go to different servers by their keys (a Cluster's nodes).
    routes = False
    #: Whether the primary may move (Sentinel, Cluster): the connector then finds it again
    #: and retries (see :meth:`.RedisConnector.call`).
    fails_over = False
    #: Counts the changes of primary noticed: a connector empties its cache of reads when
    #: it sees a new one.
    generation = 0

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

    def node_for(self, key: Any) -> Topology | Node:
        """Where the command on ``key`` goes: here the one server, this topology."""
        return self

    def refresh(self, force: bool = False, avoid: Node | None = None) -> Any:
        """Find the primary again after a failure; here nothing: every new connection
        asks where it is."""
        return None

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
    ``redis.ConnectionError``. A primary demoted while running drops its clients when
    Sentinel reconfigures it; demoted otherwise it answers writes ``READONLY``, and the
    connector drops its links and connects again. :attr:`generation` counts the primaries
    found after the first.
    """

    fails_over = True

    def __init__(self, settings: SentinelURL, **options: Any):
        super().__init__(settings, **options)
        self.service = settings.service
        self._primary: tuple[str, int] | None = None
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
        primary = self._sentinels.discover_master(self.service)
        if primary != self._primary:
            self.generation += self._primary is not None
            self._primary = primary
        host, port = primary
        return redis.Connection(host=host, port=port, protocol=2, **self.connection_options)

    def client(self) -> redis.Redis:
        return self._sentinels.master_for(self.service, max_connections=self.max_connections)


class Node:
    """One server of a :class:`Cluster`, where connections to it go (``where`` is its
    ``host:port``)."""

    __slots__ = ("options", "where")

    def __init__(self, host: str, port: int, options: dict[str, Any]):
        self.where = f"{host}:{port}"
        self.options = {**options, "host": host, "port": port}

    def connection(self) -> redis.connection.AbstractConnection:
        return redis.Connection(protocol=2, **self.options)

    def __repr__(self) -> str:
        return f"<Node {self.where}>"


class Cluster(Topology):
    """A Redis Cluster (``redis+cluster://``): its slot map, read with ``CLUSTER SLOTS`` from
    the first node that answers (the known primaries, then the seeds), names the primary
    :class:`Node` of each of its 16384 slots.

    The map is read on first use and again by :meth:`refresh` when a node says it moved
    (the connector's business: ``MOVED``, a lost node), at most once per
    :attr:`REFRESH_INTERVAL` unless forced, one thread at a time. :meth:`moved` records one
    slot's new home at once, so the retry goes there before the whole map is read again.
    :attr:`generation` counts the changes of the map: a connector empties its caches of
    reads when it sees a new one.
    """

    hash_tags = True
    routes = True
    fails_over = True
    #: The least time between two reads of the slot map (``MOVED`` storms, a down node).
    REFRESH_INTERVAL = 0.25

    def __init__(self, settings: ClusterURL, **options: Any):
        super().__init__(settings, **options)
        self.seeds = settings.nodes
        self._nodes: dict[str, Node] = {}
        self._slots: list[Node | None] = []  # slot -> primary, once read
        self._primaries: list[Node] = []
        self._read_at = -1e9
        self._lock = threading.Lock()
        after_fork(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it

    def node(self, host: str, port: int) -> Node:
        """The node at ``host:port`` (one :class:`Node` per address)."""
        where = f"{host}:{port}"
        node = self._nodes.get(where)
        if node is None:
            node = self._nodes.setdefault(where, Node(host, port, self.connection_options))
        return node

    def node_for(self, key: Any) -> Node:
        """The primary that holds ``key``'s slot (the first primary for ``None``)."""
        if key is not None and self._slots:
            node = self._slots[slot_of(key)]
            if node is not None:
                return node
        if not self._slots:
            self.refresh()
        if key is None:
            if not self._primaries:
                raise redis.exceptions.ClusterDownError(f"no node of {self.where} serves a slot")
            return self._primaries[0]
        node = self._slots[slot_of(key)]
        if node is None:  # a slot no node serves now: read the map again, once
            node = self.refresh()[slot_of(key)]
            if node is None:
                raise redis.exceptions.ClusterDownError(f"no node of {self.where} serves {key!r}")
        return node

    def primaries(self) -> list[Node]:
        """Every primary that serves a slot."""
        if not self._slots:
            self.refresh()
        return list(self._primaries)

    def moved(self, slot: int, host: str, port: int) -> Node:
        """Record that ``slot`` is served by ``host:port`` now; that node."""
        node = self.node(host, port)
        if self._slots and self._slots[slot] is not node:
            self._slots[slot] = node
            if node not in self._primaries:
                self._primaries.append(node)
            self.generation += 1
        return node

    def refresh(self, force: bool = False, avoid: Node | None = None) -> list[Node | None]:
        """Read the slot map again (unless read less than :attr:`REFRESH_INTERVAL` ago and
        not ``force``), asking ``avoid`` (a node just lost) last; the map. Raises
        ``redis.ConnectionError`` when no node answers."""
        with self._lock:
            if not force and time.monotonic() - self._read_at < self.REFRESH_INTERVAL:
                return self._slots
            candidates = dict.fromkeys(
                [*self._primaries, *(self.node(host, port) for host, port in self.seeds)]
            )
            if avoid in candidates:
                del candidates[avoid]
                candidates[avoid] = None
            errors = []
            for node in candidates:
                try:
                    slots = self._read_map(node)
                except redis.RedisError as exc:
                    errors.append(f"{node.where}: {exc}")
                    continue
                if slots != self._slots:
                    self._slots = slots
                    self._primaries = list(dict.fromkeys(n for n in slots if n is not None))
                    self.generation += 1
                self._read_at = time.monotonic()
                return self._slots
            raise redis.ConnectionError(
                f"no node of {self.where} told its slot map: {'; '.join(errors)}"
            )

    def _read_map(self, asked: Node) -> list[Node | None]:
        connection = asked.connection()
        try:
            connection.send_command("CLUSTER", "SLOTS")
            ranges = connection.read_response()
        finally:
            connection.disconnect()
        slots: list[Node | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        for first, last, (host, port, *_), *_replicas in ranges:
            host = host.decode() if isinstance(host, bytes) else host
            # an empty host is the node's own, as the one asked knows it
            node = self.node(host or asked.options["host"], int(port))
            slots[first : last + 1] = [node] * (last - first + 1)
        return slots

    def connection(self) -> redis.connection.AbstractConnection:
        """A connection to a primary (for commands without a key)."""
        return self.node_for(None).connection()

    def client(self) -> redis.cluster.RedisCluster:
        options = dict(self.connection_options)
        del options["db"]
        if self.max_connections:
            options["max_connections"] = self.max_connections
        seeds = [redis.cluster.ClusterNode(host, port) for host, port in self.seeds]
        return redis.cluster.RedisCluster(startup_nodes=seeds, **options)


#: Commands whose first argument is no key: on a Cluster they go to any primary.
KEYLESS = frozenset(
    b"PING ECHO INFO CLIENT SCRIPT WAIT CLUSTER TIME DBSIZE CONFIG COMMAND FUNCTION PUBLISH "
    b"ASKING READONLY READWRITE HELLO AUTH SELECT MEMORY SLOWLOG LATENCY LASTSAVE".split()
)
_FIRST, _SCRIPT, _STREAM, _NONE = range(4)  # where a command's routing key is
_WHERE: dict[str | bytes, int] = {}  # command name, as callers spell it -> where


def key_of(args: tuple) -> Any:
    """The key that routes the command ``args`` on a Cluster: its first argument, the first
    key of a script (``EVAL``/``EVALSHA``/``FCALL``), the first stream of ``XREAD`` and
    ``XREADGROUP``; ``None`` for a command without keys."""
    where = _WHERE.get(args[0])
    if where is None:
        where = _where(args[0])
    if len(args) < 2 or where == _NONE:
        return None
    if where == _FIRST:
        return args[1]
    if where == _SCRIPT:
        return args[3] if int(args[2]) > 0 else None
    words = [arg.upper() if isinstance(arg, (str, bytes)) else arg for arg in args]
    marker = "STREAMS" if "STREAMS" in words else b"STREAMS"
    return args[words.index(marker) + 1]


def _where(name: str | bytes) -> int:
    """Where the routing key of command ``name`` is (remembered for the next call)."""
    upper = (name.encode() if isinstance(name, str) else bytes(name)).upper()
    if upper in KEYLESS:
        where = _NONE
    elif upper.startswith((b"EVAL", b"FCALL")):
        where = _SCRIPT
    elif upper in (b"XREAD", b"XREADGROUP"):
        where = _STREAM
    else:
        where = _FIRST
    if isinstance(name, (str, bytes)) and len(_WHERE) < 1000:
        _WHERE[name] = where
    return where


def slot_of(key: Any) -> int:
    """The Cluster slot of ``key`` (str, bytes or number), its ``{hash tag}`` if it has one."""
    if type(key) is str:
        key = key.encode()
    elif type(key) is not bytes:
        key = bytes(key) if isinstance(key, (bytearray, memoryview)) else str(key).encode()
    return key_slot(key)
