"""The Redis connector every Redis user stands on: one per store, backend or flag.

It runs commands on the lean path (:meth:`RedisConnector.call`), reads through a cache that
Redis keeps fresh (:meth:`~RedisConnector.cached`), runs declared-key scripts
(:meth:`~RedisConnector.run`), scans and unlinks keys, takes and releases leases, names
keys (:meth:`~RedisConnector.namespace`) and lends a redis-py client for multi-command work.
Where commands go is its :class:`~.topology.Topology`'s business (a Cluster's routing is
:class:`~.cluster.ClusterConnector`'s). Every connection, pool and cache it holds lives in a
:class:`~scalekit.core.process.PerProcess`: made on first use in the process that uses it,
never shared with a forked child.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import redis
import redis.cluster
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    TryAgainError,
)

from scalekit.connect.redis.lean import Link, LinkPool, NoTimeLeft, Slots, open_link
from scalekit.connect.redis.namespace import Namespace
from scalekit.connect.redis.scripts import RELEASE_LEASE, Script
from scalekit.connect.redis.topology import Node, Topology, key_of
from scalekit.connect.redis.tracking import TrackedReads
from scalekit.core.context import remaining
from scalekit.core.process import PerProcess

__all__ = [
    "REDIS_OPTIONS",
    "SETTLING",
    "NotReplicated",
    "RedisConnector",
    "Server",
    "acknowledged",
    "replied",
    "scan_keys",
]

#: The options of every Redis user, in a URL's query or as keywords, with their converters:
#: a piece merges ``{**REDIS_OPTIONS, its own}`` with :func:`~scalekit.core.options.merge_options`.
REDIS_OPTIONS = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "max_connections": int,
    "ssl_ca_certs": str,
    "ssl_cert_reqs": str,
}


#: Replies that say the command did not run, and will once a failover settles.
SETTLING = (TryAgainError, ClusterDownError, ReadOnlyError, BusyLoadingError)
#: What a failover may look like to a command: retried by :meth:`RedisConnector._retried`.
FAILED = (redis.ResponseError, redis.ConnectionError, redis.TimeoutError)
_ASKING = ("ASKING",)
_NONE_TAKEN = [False]  # no slots to take (no max_connections): never set


class NotReplicated(redis.RedisError):
    """A write ran on the primary, but fewer replicas than asked acknowledged it in time
    (``WAIT``): it is on the primary only, and a failover now could lose it."""


class Server:
    """One process's links to one server (a topology's, or a Cluster node) and its cache of
    reads; :meth:`close` drops both (the server is lost or no longer the primary)."""

    __slots__ = ("endpoint", "links", "reads")

    def __init__(self, endpoint: Topology | Node, max_connections: int | None):
        self.endpoint = endpoint
        self.links = LinkPool(max_connections)
        self.reads = TrackedReads(endpoint)

    def close(self) -> None:
        self.links.close()
        self.reads.close()


class RedisConnector:
    """Commands to the Redis that ``topology`` names, from any thread of any process.

    Timeouts are short by default (1 s) so a down server costs about a second per call,
    and inside a request with a deadline no call waits past it (see :mod:`.lean`);
    hiredis parses replies when installed. Every method raises ``redis.RedisError``: the
    piece turns it into its own error, naming what it was doing.
    """

    #: Whether commands go to a Cluster node by their key (:class:`.ClusterConnector`).
    routes = False
    #: The most ``MOVED``/``ASK`` redirections one command follows.
    MAX_REDIRECTIONS = 5

    def __init__(self, topology: Topology):
        if topology.routes != self.routes:
            raise TypeError(f"{topology!r} needs open_redis(), which picks its connector")
        self.topology = topology
        # no factory refers to self: a connector nobody closes still goes (and its sockets)
        # as soon as nobody holds it
        self._server = PerProcess(partial(Server, topology, topology.max_connections), Server.close)
        self._client = PerProcess(topology.client, _disconnect)
        self._generation = topology.generation  # the primaries this process's reads knew

    def __repr__(self) -> str:
        return f"<RedisConnector {self.topology!r}>"

    def namespace(self, piece: str, app_name: str, *, spread: bool = False) -> Namespace:
        """The key namespace of ``piece`` for ``app_name``: hash-tagged if the topology
        needs it, unless ``spread`` (a piece whose commands and scripts each touch one key:
        on a Cluster its keys then spread over every primary instead of sharing a slot)."""
        return Namespace(piece, app_name, hash_tag=self.topology.hash_tags and not spread)

    @property
    def client(self) -> redis.Redis:
        """This process's redis-py client, for pipelines, ``SCAN`` and ``INFO``."""
        return self._client.get()

    def call(self, *args: Any, safe: bool = False, redirect: int | None = None) -> Any:
        """Run one command and return its raw reply (no redis-py response callbacks).
        With ``redirect``, the connection first has key tracking on, its invalidations
        sent to that client id (see :meth:`cached`). ``safe`` says the command may run
        twice (a read, a compare-and-set): after a lost connection it is retried once on
        the primary found again (Sentinel, Cluster).

        A reply error leaves its connection clean for reuse; any other failure closes it.
        When a reused connection turns out dead (the server restarted or dropped idle
        clients), every idle connection goes and the command runs once more on a new one.
        With ``max_connections``, a caller waits up to the connect timeout for a free one
        (no longer than the request's time left: then :class:`~.lean.NoTimeLeft`).
        """
        try:
            return self._on(self._server.get(), args, redirect)
        except FAILED as exc:
            if not self.topology.fails_over:
                raise
            attempt = partial(self._attempt, args, redirect)
            return self._retried(exc, self.topology, None, attempt, safe)

    def cached(self, key: str, *args: Any, max_age: float) -> Any:
        """The reply of the read command ``args`` of ``key``, from this process's cache
        while Redis has not said that ``key`` changed (``CLIENT TRACKING``: a repeated
        read costs no round trip) and it is less than ``max_age`` seconds old. The cache
        empties when a connection it was read on is lost (see :class:`.TrackedReads`)."""
        self._forget_after_failover()
        return self._server.get().reads.read(key.encode(), args, self.call, max_age)

    def forget(self, *keys: str | bytes) -> None:
        """Drop ``keys`` from this process's cache of reads (after writing them)."""
        for server in self._servers_held():
            server.reads.forget(keys)

    def run(
        self,
        script: Script,
        keys: Sequence[Any],
        args: Sequence[Any],
        *,
        safe: bool = False,
        replicas: int = 0,
        replica_timeout: float = 1.0,
    ) -> Any:
        """Run ``script`` on ``keys`` (exactly those it declares) with ``args``, by its SHA1,
        loading it first where the server lacks it; ``safe`` as for :meth:`call`. Its
        keys' cached reads go.

        With ``replicas``, a ``WAIT`` follows on the same connection (one write for both):
        :class:`NotReplicated` when fewer replicas acknowledge within ``replica_timeout``
        seconds (the write is done, but on the primary only).
        """
        command = script.evalsha(keys, args)
        try:
            try:
                return self._script(command, safe, replicas, replica_timeout)
            except redis.exceptions.NoScriptError:
                self._load(script)
                return self._script(command, safe, replicas, replica_timeout)
        finally:
            self.forget(*keys)

    def scan(self, match: str, count: int = 1000) -> Iterator[bytes]:
        """Every key matching the glob ``match`` (``SCAN``, ``count`` keys a step); a key
        written or deleted meanwhile may or may not be among them."""
        return scan_keys(self.call, match, count)

    def unlink(self, keys: Iterable[Any]) -> int:
        """Delete ``keys`` (``UNLINK``: freed in the background), 1000 a command; how many
        existed."""
        return sum(self._unlink(batch) for batch in _batches(keys, 1000))

    # -- the lease: one owner at a time, until it releases or its TTL runs out -------------
    def try_lease(self, key: Any, token: str, ttl: float) -> bool:
        """Take the lease ``key`` for ``token`` and ``ttl`` seconds unless it is held;
        true if taken (``SET NX PX``, at least 1 ms)."""
        return self.call("SET", key, token, "NX", "PX", max(1, int(ttl * 1000))) is not None

    def release_lease(self, key: Any, token: str) -> bool:
        """Release the lease ``key`` if ``token`` still holds it; true if it did."""
        return self.run(RELEASE_LEASE, [key], [token]) == 1

    def close(self) -> None:
        """Disconnect this process's connections (new ones open on next use)."""
        self._client.reset()
        self._server.reset()

    # -- helpers ----------------------------------------------------------------------------
    def _on(self, server: Server, args: tuple, redirect: int | None) -> Any:
        """Run ``args`` on one of ``server``'s links (see :meth:`call`)."""
        pool = server.links
        slots = pool.slots
        taken = _NONE_TAKEN
        try:
            if slots is not None:
                taken = [False]  # set as a slot is taken (see Slots.take): given back below
                self._take_slot(slots, server, taken)
            try:
                link = pool.idle.pop()
            except IndexError:
                return self._run(server, open_link(server.endpoint), args, redirect)
            try:
                return self._run(server, link, args, redirect)
            except redis.ConnectionError:
                pool.close()
                return self._run(server, open_link(server.endpoint), args, redirect)
        finally:
            if taken[0]:
                slots.give()

    def _run(self, server: Server, link: Link, args: tuple, redirect: int | None) -> Any:
        pool = server.links
        link.busy = True
        try:
            if redirect is not None and link.redirect != redirect:
                link.execute(("CLIENT", "TRACKING", "ON", "REDIRECT", redirect))
                link.redirect = redirect
                server.reads.track(link)
            reply = link.execute(args)
        except (redis.ResponseError, NoTimeLeft):  # nothing unread left on the link
            link.busy = False
            pool.idle.append(link)
            raise
        except BaseException:
            link.close()
            raise
        link.busy = False
        pool.idle.append(link)
        return reply

    def _pipeline(self, server: Server, commands: list[tuple], wait: float = 0.0) -> list[Any]:
        """The replies of ``commands`` written at once on one of ``server``'s links (error
        replies returned, not raised; ``wait``: seconds more the replies may take)."""
        pool = server.links
        slots = pool.slots
        taken = _NONE_TAKEN
        try:
            if slots is not None:
                taken = [False]
                self._take_slot(slots, server, taken)
            try:
                link = pool.idle.pop()
            except IndexError:
                link = open_link(server.endpoint)
            try:
                replies = link.pipeline(commands, wait)
            except NoTimeLeft:
                pool.idle.append(link)
                raise
            except BaseException:
                link.close()
                raise
            pool.idle.append(link)
            return replies
        finally:
            if taken[0]:
                slots.give()

    def _attempt(self, args: tuple, redirect: int | None, server: Server, asking: bool) -> Any:
        """Run ``args`` on ``server`` (after ``ASKING`` if ``asking``)."""
        if asking:
            return replied(self._pipeline(server, [_ASKING, args])[1])
        return self._on(server, args, redirect)

    def _script(self, command: tuple, safe: bool, replicas: int, timeout: float) -> Any:
        """Run the ``EVALSHA`` ``command``, and with ``replicas`` its ``WAIT`` (see :meth:`run`)."""
        if not replicas:
            return self.call(*command, safe=safe)
        wait = ("WAIT", replicas, max(1, int(timeout * 1000)))
        return self._attempted(key_of(command), partial(self._waited, command, wait), safe)

    def _waited(self, command: tuple, wait: tuple, server: Server, asking: bool) -> Any:
        """Run ``command`` and ``wait`` (``WAIT n ms``) in one write on ``server``, its
        reply awaited for the socket timeout plus ``WAIT``'s own."""
        commands = [_ASKING, command, wait] if asking else [command, wait]
        replies = self._pipeline(server, commands, wait[2] / 1000)
        return acknowledged(replies[-2:], wait[1])

    def _attempted(self, key: Any, attempt: Callable[[Server, bool], Any], safe: bool) -> Any:
        """``attempt(server, asking)`` on the primary of ``key``, retried as :meth:`call` says."""
        node = self.topology.node_for(key)
        try:
            return attempt(self._server_of(node), False)
        except FAILED as exc:
            if not self.topology.fails_over:
                raise
            return self._retried(exc, node, key, attempt, safe)

    def _retried(
        self,
        error: Exception,
        node: Topology | Node,
        key: Any,
        attempt: Callable[[Server, bool], Any],
        safe: bool,
    ) -> Any:
        """After ``error`` on ``node``, ``attempt`` again where the topology says ``key``'s
        primary is now: after a redirection (``MOVED``, ``ASK``) at once; after a reply that
        says the command did not run (a failover under way), after a pause, while the socket
        timeout lasts; after a lost connection, once and only if ``safe``. A lost or
        demoted node's links and cached reads go."""
        if isinstance(error, NoTimeLeft):  # nothing was sent, nothing is wrong with the node
            raise error
        topology = self.topology
        asking, redirections, lost = False, 0, False
        deadline = time.monotonic() + min(topology.socket_timeout, remaining())
        pause = 0.01
        while True:
            if isinstance(error, MovedError):
                node, asking = topology.moved(error.slot_id, error.host, error.port), False
                topology.refresh()
                redirections += 1
            elif isinstance(error, AskError):
                node, asking = topology.node(error.host, error.port), True
                redirections += 1
            elif isinstance(error, SETTLING):
                if time.monotonic() + pause > deadline:
                    raise error
                if isinstance(error, ReadOnlyError):  # a replica now
                    self._drop(node)
                time.sleep(pause)
                pause = min(2 * pause, 0.1)
                topology.refresh()
                node, asking, redirections = topology.node_for(key), False, 0
            elif isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
                self._drop(node)
                topology.refresh(avoid=node)
                if not safe or lost:
                    raise error
                node, asking, lost = topology.node_for(key), False, True
            elif isinstance(error, ClusterCrossSlotError):
                raise ClusterCrossSlotError(
                    f"{error}: the keys of one command must share a hash tag, e.g. {{app}}:a "
                    "and {app}:b"
                ) from None
            else:
                raise error
            if redirections > self.MAX_REDIRECTIONS:
                raise redis.exceptions.ClusterError(
                    f"{key!r} was redirected {redirections} times on {topology.where}"
                )
            try:
                return attempt(self._server_of(node), asking)
            except NoTimeLeft:
                raise
            except FAILED as exc:
                error = exc

    def _server_of(self, node: Topology | Node) -> Server:
        """This process's links to ``node`` (here: the one server)."""
        return self._server.get()

    def _drop(self, node: Topology | Node) -> None:
        """Close ``node``'s links and cache of reads (lost, or not the primary now)."""
        self._server.reset()

    def _unlink(self, keys: list[Any]) -> int:
        """``UNLINK`` one batch of keys (see :meth:`unlink`)."""
        return self.call("UNLINK", *keys)

    def _servers_held(self) -> list[Server]:
        """This process's links and caches of reads, per server, made so far."""
        server = self._server.peek()
        return [] if server is None else [server]

    def _forget_after_failover(self) -> None:
        """Empty every cache of reads if the primaries changed since it was filled."""
        if self._generation != self.topology.generation:
            self._generation = self.topology.generation
            for server in self._servers_held():
                server.reads.close()

    def _load(self, script: Script) -> None:
        """Load ``script`` where :meth:`run` runs it."""
        self.call("SCRIPT", "LOAD", script.source)

    def _take_slot(self, slots: Slots, server: Server, taken: list[bool]) -> None:
        """Take one of ``slots`` (``taken[0]`` set as it is), waiting up to the connect
        timeout and no longer than the request's time left; raises if none frees up."""
        patience = self.topology.socket_connect_timeout or 1.0
        left = remaining()
        if slots.take(min(patience, left), taken):
            return
        if left < patience:
            raise NoTimeLeft(
                f"no time left for Redis at {server.endpoint.where}: the request's deadline "
                f"passed while all {self.topology.max_connections} connections were busy"
            )
        raise redis.ConnectionError(
            f"all {self.topology.max_connections} connections to {server.endpoint.where} are busy"
        )


def replied(reply: Any) -> Any:
    """``reply`` from a pipeline, raised if it is an error."""
    if isinstance(reply, Exception):
        raise reply
    return reply


def acknowledged(replies: list[Any], replicas: int) -> Any:
    """A script's reply, from the replies to it and to its ``WAIT replicas``; raises the
    script's error, or :class:`NotReplicated` when too few replicas acknowledged."""
    reply, acknowledged = map(replied, replies)
    if acknowledged < replicas:
        raise NotReplicated(
            f"the write is on the primary only: {acknowledged} of {replicas} replicas "
            "acknowledged it in time"
        )
    return reply


def scan_keys(call: Callable[..., Any], match: str, count: int) -> Iterator[bytes]:
    """The keys matching ``match`` on the server ``call`` runs commands on."""
    cursor = b"0"
    while True:
        cursor, keys = call("SCAN", cursor, "MATCH", match, "COUNT", count, safe=True)
        yield from keys
        if cursor == b"0":
            return


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _disconnect(client: redis.Redis | redis.cluster.RedisCluster) -> None:
    if isinstance(client, redis.cluster.RedisCluster):
        client.close()
    else:
        client.connection_pool.disconnect()
