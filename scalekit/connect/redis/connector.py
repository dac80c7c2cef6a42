"""The Redis connector every Redis user stands on: one per store, backend or flag.

It runs commands on the lean path (:meth:`RedisConnector.call`), reads through a cache that
Redis keeps fresh (:meth:`~RedisConnector.cached`), runs declared-key scripts
(:meth:`~RedisConnector.run`), takes and releases leases, names keys
(:meth:`~RedisConnector.namespace`) and lends a redis-py client for multi-command work.
Where commands go is its :class:`~.topology.Topology`'s business. Every connection, pool and
cache it holds lives in a :class:`~scalekit.core.process.PerProcess`: made on first use in
the process that uses it, never shared with a forked child.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import redis

from scalekit.connect.redis.lean import Link, LinkPool, open_link
from scalekit.connect.redis.namespace import Namespace
from scalekit.connect.redis.scripts import RELEASE_LEASE, Script
from scalekit.connect.redis.topology import Topology
from scalekit.connect.redis.tracking import TrackedReads
from scalekit.core.process import PerProcess

__all__ = ["REDIS_OPTIONS", "RedisConnector"]

#: The options of every Redis user, in a URL's query or as keywords, with their converters:
#: a piece merges ``{**REDIS_OPTIONS, its own}`` with :func:`~scalekit.core.options.merge_options`.
REDIS_OPTIONS = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "max_connections": int,
    "ssl_ca_certs": str,
    "ssl_cert_reqs": str,
}


class RedisConnector:
    """Commands to the Redis that ``topology`` names, from any thread of any process.

    Timeouts are short by default (1 s) so a down server costs about a second per call;
    hiredis parses replies when installed. Every method raises ``redis.RedisError``: the
    piece turns it into its own error, naming what it was doing.
    """

    def __init__(self, topology: Topology):
        self.topology = topology
        # no factory refers to self: a connector nobody closes still goes (and its sockets)
        # as soon as nobody holds it
        self._links = PerProcess(partial(LinkPool, topology.max_connections), LinkPool.close)
        self._reads = PerProcess(partial(TrackedReads, topology), TrackedReads.close)
        self._client = PerProcess(topology.client, _disconnect)

    def __repr__(self) -> str:
        return f"<RedisConnector {self.topology!r}>"

    def namespace(self, piece: str, app_name: str) -> Namespace:
        """The key namespace of ``piece`` for ``app_name``, hash-tagged if the topology
        needs it."""
        return Namespace(piece, app_name, hash_tag=self.topology.hash_tags)

    @property
    def client(self) -> redis.Redis:
        """This process's redis-py client, for pipelines, ``SCAN`` and ``INFO``."""
        return self._client.get()

    def call(self, *args: Any, redirect: int | None = None) -> Any:
        """Run one command and return its raw reply (no redis-py response callbacks).
        With ``redirect``, the connection first has key tracking on, its invalidations
        sent to that client id (see :meth:`cached`).

        A reply error leaves its connection clean for reuse; any other failure closes it.
        When a reused connection turns out dead (the server restarted or dropped idle
        clients), every idle connection goes and the command runs once more on a new one.
        With ``max_connections``, a caller waits up to the connect timeout for a free one.
        """
        pool = self._links.get()
        slots = pool.slots
        if slots is not None and not slots.acquire(timeout=self._wait_for_slot):
            raise redis.ConnectionError(
                f"all {self.topology.max_connections} connections to {self.topology.where} are busy"
            )
        try:
            try:
                link = pool.idle.pop()
            except IndexError:
                return self._run(pool, open_link(self.topology), args, redirect)
            try:
                return self._run(pool, link, args, redirect)
            except redis.ConnectionError:
                pool.close()
                return self._run(pool, open_link(self.topology), args, redirect)
        finally:
            if slots is not None:
                slots.release()

    def cached(self, key: str, *args: Any, max_age: float) -> Any:
        """The reply of the read command ``args`` of ``key``, from this process's cache
        while Redis has not said that ``key`` changed (``CLIENT TRACKING``: a repeated
        read costs no round trip) and it is less than ``max_age`` seconds old. The cache
        empties when a connection it was read on is lost (see :class:`.TrackedReads`)."""
        return self._reads.get().read(key.encode(), args, self.call, max_age)

    def forget(self, *keys: str) -> None:
        """Drop ``keys`` from this process's cache of reads (after writing them)."""
        reads = self._reads.peek()
        if reads is not None:
            reads.forget([key.encode() for key in keys])

    def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` on ``keys`` (exactly those it declares) with ``args``, by its SHA1,
        loading it first where the server lacks it. Its keys' cached reads go."""
        command = script.evalsha(keys, args)
        try:
            return self.call(*command)
        except redis.exceptions.NoScriptError:
            self.call("SCRIPT", "LOAD", script.source)
            return self.call(*command)
        finally:
            self.forget(*keys)

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
        self._links.reset()
        self._reads.reset()

    # -- helpers ----------------------------------------------------------------------------
    def _run(self, pool: LinkPool, link: Link, args: tuple, redirect: int | None) -> Any:
        link.busy = True
        try:
            if redirect is not None and link.redirect != redirect:
                link.execute(("CLIENT", "TRACKING", "ON", "REDIRECT", redirect))
                link.redirect = redirect
                self._reads.get().track(link)
            reply = link.execute(args)
        except redis.ResponseError:
            link.busy = False
            pool.idle.append(link)
            raise
        except BaseException:
            link.close()
            raise
        link.busy = False
        pool.idle.append(link)
        return reply

    @property
    def _wait_for_slot(self) -> float:
        return self.topology.socket_connect_timeout or 1.0


def _disconnect(client: redis.Redis) -> None:
    client.connection_pool.disconnect()
