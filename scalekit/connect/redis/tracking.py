"""One process's cache of reads, kept fresh by Redis (client-side caching, ``CLIENT TRACKING``).

A repeated read of a key costs no round trip until Redis says the key changed (written,
deleted, expired, flushed): the connector's :meth:`~.RedisConnector.cached`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from scalekit.connect.redis.lean import Link, any_lost, open_link
from scalekit.connect.redis.topology import Topology

__all__ = ["TrackedReads"]


class TrackedReads:
    """Reads kept until Redis invalidates them (RESP2, invalidations redirected).

    A link of its own subscribes to ``__redis__:invalidate``; every connection that makes a
    cached read has tracking on with ``REDIRECT`` to it, so Redis sends the name of each key
    it read there as soon as the key changes. Before each cached read the invalidations that
    arrived are read without blocking. A read that overlapped an invalidation handled by
    another thread is not kept.

    Redis forgets what a connection read when it closes (killed, dropped as idle, timed out
    here), and sends nothing more about it: so before each cached read, if the invalidation
    link or any tracked connection is lost, the whole cache is emptied (a lost invalidation
    link is replaced on that read). And whatever else might go unheard (a network that drops
    packets without closing anything), no read is served older than its ``max_age``.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, topology: Topology):
        self._topology = topology
        self._lock = threading.Lock()
        self._entries: dict[bytes, tuple[float, Any]] = {}  # key: (read at, reply)
        self._tracked: list[Link] = []  # the connections whose reads are kept here
        self._epoch = 0  # invalidations handled so far
        self._link: Link | None = None
        self._client_id: int | None = None

    def read(self, key: bytes, args: tuple, call: Callable[..., Any], max_age: float) -> Any:
        """The reply of the read command ``args`` of ``key``: cached if read less than
        ``max_age`` seconds ago, or read now with ``call`` (the connector's, on a connection
        that tracks for this cache and is given to :meth:`track`)."""
        started = time.monotonic()
        with self._lock:
            if self._link is not None:
                self._drain()  # may find the link closed, and empty the cache
            if self._tracked and any_lost(self._tracked):
                self._empty()
            if self._link is None:
                self._subscribe()
            entry = self._entries.get(key)
            if entry is not None and started - entry[0] < max_age:
                return entry[1]
            epoch, client_id = self._epoch, self._client_id
        reply = call(*args, redirect=client_id)
        with self._lock:
            if self._epoch == epoch and self._client_id == client_id:
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
                self._entries[key] = (started, reply)
        return reply

    def track(self, link: Link) -> None:
        """``link`` has tracking on for this cache now: its loss will empty the cache."""
        with self._lock:
            self._tracked.append(link)

    def forget(self, keys: Iterable[str | bytes]) -> None:
        """Drop ``keys`` (this process wrote them), and keep no read that overlapped."""
        if self._link is None:  # nothing read, nothing reading (a read subscribes first)
            return
        with self._lock:
            for key in keys:
                self._entries.pop(key.encode() if isinstance(key, str) else key, None)
            self._epoch += 1

    def close(self) -> None:
        with self._lock:
            self._reset()

    def _subscribe(self) -> None:
        link = open_link(self._topology)
        try:
            client_id = link.execute(("CLIENT", "ID"))
            link.execute(("SUBSCRIBE", "__redis__:invalidate"))
        except BaseException:
            link.close()
            raise
        self._link, self._client_id = link, client_id

    def _drain(self) -> None:
        """Apply every invalidation that has arrived, without waiting for more."""
        try:
            messages = self._link.pending()
        except redis.ConnectionError:  # closed: what it would have said is lost
            self._reset()
            return
        for message in messages:
            keys = message[2]  # [b"message", b"__redis__:invalidate", keys or None]
            self._epoch += 1
            if keys is None:
                self._entries.clear()
            else:
                for key in keys:
                    self._entries.pop(key, None)

    def _empty(self) -> None:
        """Drop every read, and watch no connection until it tracks again (on its next
        cached read: one still open is told to track again then)."""
        self._entries.clear()
        self._epoch += 1
        for link in self._tracked:
            link.redirect = None
        self._tracked.clear()

    def _reset(self) -> None:
        self._empty()
        if self._link is not None:
            self._link.close()
        self._link, self._client_id = None, None
