"""The nodes behind a :class:`~scalekit.connect.memcache.MemcacheClient`: connection pools,
placement, node health.

Placement: rendezvous (highest random weight) hashing, HashClient's default scheme, scores
each ``host:port`` with the key and takes the best, so adding or removing a node moves only
that node's keys. It hashes with blake2b (in C, about a microsecond a node) rather than
pymemcache's pure-Python murmur3 (about 40 µs a node, more than a local round trip). Every
app server must name the servers alike (same host spelling and port), in any order.

Failures: connect and socket timeouts (1 s by default) bound the cost of a dead node. A node
that fails is skipped (calls for its keys raise the user's :class:`StoreUnavailable` at once)
for ``retry_timeout`` seconds, then tried again; after ``retry_attempts`` failed retries it
leaves the ring for ``dead_timeout`` seconds and its keys go to the other nodes (as
pymemcache's HashClient does). It comes back only once emptied with ``flush_all``: the copies
it kept may be older than the deletes and writes its keys had elsewhere meanwhile (a
signed-out session would live again). The cost: every entry of that memcached server is
lost (its other users signed out, other apps' keys on the server too); a node that cannot be
flushed stays out for another ``dead_timeout``. Not covered: an app server that never saw
the node fail keeps reading it, and can read a copy another app server deleted on the
fallback until the node is flushed (at most ``dead_timeout`` after it answers again); and
what the fallback node got meanwhile stays there until its TTL, read again if the same node
leaves the ring again. The last live node never leaves the ring: with one server,
calls fail fast and the server is retried every ``retry_timeout`` seconds. HashClient itself
is not used because it answers "missing" or "not stored" for a node in its retry window
(a live session would read as gone), does not count an unexpectedly closed connection as a
failure, and updates its failure bookkeeping from several threads without a lock.

Replicas (``replicas=n`` > 1, the session store's option): a key lives on the ``n`` nodes
that score it highest among *every configured* node (:meth:`Cluster.each_replica`), whatever
their health, so a node that fails moves no key: its keys are served by their other
replicas, and it is retried every ``retry_timeout`` (never taken out of the ring for
``dead_timeout``, never flushed on return). A write it misses makes it stale instead: the
caller, once its write landed on another replica, names the key and what it wrote
(:meth:`Cluster.remember_missed`), and before this process sends the node anything else once
it answers again, it deletes there each copy that ``stale`` says is older than that, with a
compare-and-delete (a newer one another process wrote meanwhile stays); past ``_MAX_MISSED``
keys it empties the node with ``flush_all``. So it never serves a copy older than its
replicas'. That memory is this process's: another process that never saw the node fail
may read such a copy until then (see the session store's notes).
"""

from __future__ import annotations

import hashlib
import logging
import math
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from pymemcache.client.base import Client, PooledClient
from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError

from scalekit.core.errors import ScalekitError, SerializationError, StoreUnavailable

__all__ = ["Cluster", "Settings", "node_name"]

_T = TypeVar("_T")

# Errors that say the node (or the connection to it) is broken, not the request.
_NODE_FAILURES = (OSError, MemcacheUnexpectedCloseError)

# Keys a replica node may miss before it is emptied on return instead of catching up key by key.
_MAX_MISSED = 10_000


class Settings(Protocol):
    """What a :class:`Cluster` reads from its client's settings (``ClientSettings``)."""

    url: str
    servers: tuple[tuple[str, int], ...]
    connect_timeout: float
    timeout: float
    retry_attempts: int
    retry_timeout: float
    dead_timeout: float
    max_pool_size: int | None


class _Node:
    """One memcached server: its connection pool and how it has been failing."""

    def __init__(self, server: tuple[str, int], settings: Settings, serde: Any = None):
        self.name = node_name(server)
        # The pool of pymemcache's PooledClient; calls take a connection from it themselves,
        # so a command sequence (touch, release_lease) runs on one connection.
        self.pool = PooledClient(
            server,
            connect_timeout=settings.connect_timeout,
            timeout=settings.timeout,
            no_delay=True,
            max_pool_size=settings.max_pool_size,
            default_noreply=False,
            serde=serde,
        ).client_pool
        self.failures = 0  # consecutive failed calls
        self.failed_at = 0.0  # time.monotonic() of the last failure
        self.dead_until = 0.0  # out of the ring until then (time.monotonic())
        # With replicas: keys whose writes it missed, and what was written elsewhere (cleared
        # when it answers again; flush_first past _MAX_MISSED); catching_up guards them.
        self.missed: dict[bytes, Any] = {}
        self.flush_first = False
        self.catching_up = threading.Lock()


class Cluster:
    """This process's nodes, the ring that places keys on them, and their health.

    ``error`` is the exception class raised when a node cannot answer, ``label`` names the
    user in messages ("session store", "cache"), ``serde`` is pymemcache's (de)serializer,
    ``replicas`` the number of nodes :meth:`each_replica` runs on (1: no replicas),
    ``stale(value, written)`` whether a node's copy is older than what was written elsewhere
    (see :meth:`remember_missed`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        error: type[StoreUnavailable],
        label: str,
        logger: logging.Logger,
        serde: Any = None,
        replicas: int = 1,
        stale: Callable[[bytes, Any], bool] | None = None,
    ):
        self.error, self.label, self.log = error, label, logger
        self.replicas, self.stale = replicas, stale
        self.url = settings.url
        self.retry_attempts = settings.retry_attempts
        self.retry_timeout = settings.retry_timeout
        self.dead_timeout = settings.dead_timeout
        self.max_pool_size = settings.max_pool_size
        self.nodes = {
            node.name: node for node in (_Node(s, settings, serde) for s in settings.servers)
        }
        self._lock = threading.Lock()  # guards health changes; calls themselves run unlocked
        self._live: tuple[str, ...] = tuple(self.nodes)
        self._ring = _Ring(self._live)  # replaced, never changed in place
        self._placement = _Ring(self.nodes)  # the replicas' ring: every node, never changed
        self._next_revival = math.inf

    def run(self, action: str, key: bytes, command: Callable[[Client], _T]) -> _T:
        """Run ``command`` on a pooled connection to the node of ``key``; map failures."""
        if time.monotonic() >= self._next_revival:
            self._revive()
        return self._run_on(self.nodes[self._ring.node_for(key)], action, command)

    def each_replica(
        self, action: str, key: bytes, command: Callable[[Client], _T], *,
        skipped: list[str] | None = None,
    ) -> Iterator[tuple[str, _T]]:  # fmt: skip
        """Run ``command`` on each replica node of ``key``, best first, as the caller
        iterates; yield ``(node name, result)`` for each that answers. One that fails is
        skipped (its name appended to ``skipped``: a writer tells :meth:`remember_missed`
        once its write landed elsewhere). Raises the first failure if none answered."""
        failure: StoreUnavailable | None = None
        answered = False
        for name in self._placement.top(key, self.replicas):
            try:
                result = self._run_on(self.nodes[name], action, command)
            except StoreUnavailable as exc:
                failure = failure or exc
                if skipped is not None:
                    skipped.append(name)
                continue
            answered = True
            yield name, result
        if not answered:
            raise failure  # type: ignore[misc] - replicas >= 1: at least one node failed

    def run_at(self, name: str, action: str, command: Callable[[Client], _T]) -> _T:
        """Run ``command`` on the node ``name`` (a name :meth:`each_replica` yielded)."""
        return self._run_on(self.nodes[name], action, command)

    def remember_missed(self, name: str, key: bytes, written: Any) -> None:
        """Note that the node ``name`` missed a write of ``written`` to ``key`` that another
        replica got: before it answers anything else, its copy goes if ``stale`` says it is
        older (see :meth:`_catch_up`). Never for a write that landed nowhere: its copy may
        then be the only one."""
        node = self.nodes[name]
        with node.catching_up:
            if not node.flush_first:
                node.missed[key] = written  # the latest write it missed
                if len(node.missed) > _MAX_MISSED:
                    node.flush_first, node.missed = True, {}

    def run_on_each(self, action: str, command: Callable[[Client], _T]) -> list[_T]:
        """Run ``command`` on every configured node, dead or alive (a node that fails
        raises, so a caller never mistakes part of the nodes for all of them)."""
        return [self._run_on(node, action, command) for node in self.nodes.values()]

    def _run_on(self, node: _Node, action: str, command: Callable[[Client], _T]) -> _T:
        if node.failures:
            wait = node.failed_at + self.retry_timeout - time.monotonic()
            if wait > 0:
                raise self._unavailable(
                    action, node, f"failed {node.failures} time(s); next try in {wait:.1f} s"
                )
        try:
            conn = node.pool.get()
        except RuntimeError:  # every pooled connection is in use
            raise self._unavailable(
                action, node, f"all {self.max_pool_size} connections are in use; raise "
                "max_pool_size"
            ) from None  # fmt: skip
        try:
            if conn.sock is not None and _readable(conn.sock):
                conn.close()  # closed by the server (a restart) or unread bytes: reconnect
            if node.missed or node.flush_first:
                self._catch_up(node, conn)
            result = command(conn)
        except BaseException as exc:
            node.pool.destroy(conn)  # its stream may be mid-reply: never reuse it
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: not the store's failure
            if isinstance(exc, ScalekitError):
                raise  # the command's own verdict on an answer (corrupt, a race): the node is fine
            if isinstance(exc, _NODE_FAILURES):
                self._failed(node)
            elif isinstance(exc, MemcacheError) and "too large" in str(exc):
                raise SerializationError(
                    f"{self.label} {self.url} failed to {action}: memcached "
                    f"{node.name} refused the value as too large ({exc})"
                ) from None
            # anything else is an answer pymemcache could not use (an error, not memcached)
            raise self._unavailable(action, node, _describe(exc)) from None
        node.pool.release(conn)
        if node.failures:
            self._recovered(node)
        return result

    def close(self) -> None:
        for node in self.nodes.values():
            node.pool.clear()

    def _unavailable(self, action: str, node: _Node, problem: str) -> StoreUnavailable:
        return self.error(
            f"{self.label} {self.url} failed to {action}: memcached {node.name}: {problem}; "
            "check that it is running and reachable"
        )

    def _failed(self, node: _Node) -> None:
        with self._lock:
            node.failures += 1
            node.failed_at = time.monotonic()
            if node.failures == 1:
                self.log.warning("%s %s: memcached %s failed", self.label, self.url, node.name)
            if (
                self.replicas == 1  # replicas never move: other replicas serve its keys
                and node.failures > self.retry_attempts
                and len(self._live) > 1
                and node.name in self._live
            ):
                node.dead_until = node.failed_at + self.dead_timeout
                self._next_revival = min(self._next_revival, node.dead_until)
                self._set_live(name for name in self._live if name != node.name)
                self.log.warning(
                    "%s %s: memcached %s is down; its keys go to the other nodes for %g s",
                    self.label, self.url, node.name, self.dead_timeout,
                )  # fmt: skip

    def _recovered(self, node: _Node) -> None:
        with self._lock:
            if node.failures:
                node.failures = 0
                self.log.info("%s %s: memcached %s answers again", self.label, self.url,
                              node.name)  # fmt: skip

    def _catch_up(self, node: _Node, conn: Client) -> None:
        """Before anything else on a replica node that answers again, delete its copies of
        the keys whose writes it missed, where still older than what was written elsewhere
        (``gets``, then ``cas`` with a negative exptime: a compare-and-delete); empty it
        past ``_MAX_MISSED``. Readers then miss there and read another replica."""
        with node.catching_up:
            if node.flush_first:
                conn.flush_all(noreply=False)
                self.log.warning(
                    "%s %s: memcached %s missed writes to over %d keys while unreachable; "
                    "emptied it (its keys are read from their other replicas)",
                    self.label, self.url, node.name, _MAX_MISSED,
                )  # fmt: skip
            elif node.missed:
                for key, (value, cas) in conn.gets_many(list(node.missed)).items():
                    if self.stale is None or self.stale(value, node.missed[key]):
                        conn.cas(key, b"", cas, expire=-1, noreply=False)
            node.missed, node.flush_first = {}, False

    def _revive(self) -> None:
        """Put back in the ring the nodes whose ``dead_timeout`` has passed, each flushed
        first; a node that cannot be flushed stays out for another ``dead_timeout``."""
        with self._lock:
            current = time.monotonic()
            due = [node for node in self.nodes.values() if 0 < node.dead_until <= current]
            for node in due:  # claimed: no other thread flushes it meanwhile
                node.dead_until = current + self.dead_timeout
            self._next_revival = self._next_dead_until()
        back = [node for node in due if self._flushed(node)]
        with self._lock:
            for node in back:
                node.failures, node.dead_until = 0, 0.0
                self.log.info("%s %s: memcached %s is back in the ring (flushed)", self.label,
                              self.url, node.name)  # fmt: skip
            if back:
                self._set_live([*self._live, *(node.name for node in back)])
            self._next_revival = self._next_dead_until()

    def _flushed(self, node: _Node) -> bool:
        """Empty ``node`` (``flush_all``) before it comes back: what it holds may be older than
        the deletes and writes its keys had on other nodes meanwhile (a signed-out session
        would live again). Its other entries are lost: a store that loses entries logs users
        out, which is safe; one that brings back a signed-out session is not."""
        try:
            self._run_on(node, "flush a returning node", lambda conn: conn.flush_all())
        except StoreUnavailable as exc:
            self.log.warning("%s; it stays out of the ring", exc)
            return False
        return True

    def _next_dead_until(self) -> float:
        waiting = [node.dead_until for node in self.nodes.values() if node.dead_until > 0]
        return min(waiting, default=math.inf)

    def _set_live(self, names: Iterable[str]) -> None:
        live = set(names)
        self._live = tuple(name for name in self.nodes if name in live)  # configured order
        self._ring = _Ring(self._live)


class _Ring:
    """Rendezvous hashing over node names: a key goes to the node that scores it highest."""

    def __init__(self, names: Iterable[str]):
        self._seeds = [(name, hashlib.blake2b(name.encode() + b"\0", digest_size=8))
                       for name in names]  # fmt: skip

    def node_for(self, key: bytes) -> str:
        return max(self._scores(key))[1]

    def top(self, key: bytes, count: int) -> list[str]:
        """The ``count`` nodes that score ``key`` highest, best first."""
        return [name for _, name in sorted(self._scores(key), reverse=True)[:count]]

    def _scores(self, key: bytes) -> Iterator[tuple[int, str]]:
        for name, seed in self._seeds:
            digest = seed.copy()
            digest.update(key)
            yield int.from_bytes(digest.digest(), "big"), name


def node_name(server: tuple[str, int]) -> str:
    """``host:port``, the name a node is hashed and logged by."""
    host, port = server
    return f"{host}:{port}"


def _readable(sock: Any) -> bool:
    """True if an idle pooled connection has something to read: EOF, a reset, stray bytes."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out (raise connect_timeout/timeout if it is only slow)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
