"""The connector on a Redis Cluster: each command goes to the node that holds its key.

The key is the command's first argument, a script's first key, the first stream of
``XREAD``/``XREADGROUP`` (:func:`~.topology.key_of`); a command without one goes to any
primary. Each node has its own links and its own cache of reads (tracking redirected to an
invalidation link on that node). A reply that says the command did not run is followed:
``MOVED`` (the slot lives elsewhere now: the map is updated, the command runs there),
``ASK`` (a slot half migrated: ``ASKING`` and the command, once, on the target),
``TRYAGAIN``, ``CLUSTERDOWN``, ``LOADING`` and ``READONLY`` (a failover under way: a short
pause, the slot map read again, a retry while the socket timeout lasts). A lost connection
drops that node's links and cache and reads the map again; the command runs again only if
the caller said it is ``safe`` to (it may have run).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

import redis
from redis.exceptions import (
    AskError,
    MovedError,
)

from scalekit.connect.redis.connector import (
    FAILED,
    SETTLING,
    RedisConnector,
    Server,
    scan_keys,
)
from scalekit.connect.redis.lean import NoTimeLeft
from scalekit.connect.redis.scripts import Script
from scalekit.connect.redis.topology import Cluster, Node, key_of, slot_of
from scalekit.core.process import PerProcess

__all__ = ["ClusterConnector"]


class ClusterConnector(RedisConnector):
    """A :class:`.RedisConnector` whose commands go to the Cluster node of their key."""

    routes = True
    topology: Cluster

    def __init__(self, topology: Cluster):
        super().__init__(topology)
        self._servers: PerProcess[dict[Node, Server]] = PerProcess(dict, _close_all)

    def __repr__(self) -> str:
        return f"<ClusterConnector {self.topology!r}>"

    def call(self, *args: Any, safe: bool = False, redirect: int | None = None) -> Any:
        key = key_of(args)
        node = self.topology.node_for(key)
        server = self._servers.get().get(node) or self._server_of(node)
        try:
            return self._on(server, args, redirect)
        except FAILED as exc:
            attempt = partial(self._attempt, args, redirect)
            return self._retried(exc, node, key, attempt, safe)

    def cached(self, key: str, *args: Any, max_age: float) -> Any:
        self._forget_after_failover()  # or a migration
        server = self._server_of(self.topology.node_for(key))
        try:
            return server.reads.read(key.encode(), args, partial(self._on_node, server), max_age)
        except NoTimeLeft:  # nothing was sent, nothing is wrong with the node
            raise
        except MovedError as exc:
            self.topology.moved(exc.slot_id, exc.host, exc.port)
        except (*SETTLING, AskError):
            pass
        except (redis.ConnectionError, redis.TimeoutError):
            self._drop(server.endpoint)
        return self.call(*args, safe=True)  # where the key is now, not cached this time

    def scan(self, match: str, count: int = 1000) -> Iterator[bytes]:
        for node in self.topology.primaries():
            yield from scan_keys(partial(self._on_node, self._server_of(node)), match, count)

    def close(self) -> None:
        super().close()
        self._servers.reset()

    # -- helpers ----------------------------------------------------------------------------
    def _on_node(
        self, server: Server, *args: Any, safe: bool = False, redirect: int | None = None
    ) -> Any:
        """Run ``args`` on ``server``'s node, whatever its key (``safe`` has no use here)."""
        return self._on(server, args, redirect)

    def _unlink(self, keys: list[Any]) -> int:
        by_slot = defaultdict(list)
        for key in keys:
            by_slot[slot_of(key)].append(key)
        return sum(self.call("UNLINK", *same_slot) for same_slot in by_slot.values())

    def _servers_held(self) -> list[Server]:
        servers = self._servers.peek()
        return [] if servers is None else list(servers.values())

    def _load(self, script: Script) -> None:
        for node in self.topology.primaries():
            self._on(self._server_of(node), ("SCRIPT", "LOAD", script.source), None)

    def _server_of(self, node: Node) -> Server:
        servers = self._servers.get()
        server = servers.get(node)
        if server is None:
            server = servers.setdefault(node, Server(node, self.topology.max_connections))
        return server

    def _drop(self, node: Node) -> None:
        """Close ``node``'s links and cache of reads (lost, or not the primary now)."""
        server = self._servers.get().pop(node, None)
        if server is not None:
            server.close()


def _close_all(servers: dict[Node, Server]) -> None:
    for server in servers.values():
        server.close()
