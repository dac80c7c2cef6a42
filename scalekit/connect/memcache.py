"""The memcached connector: the nodes a session store or cache talks to, opened by URL, and
the few operations both build on.

Settings: :class:`ClientSettings` names the options and their defaults once for every user;
:data:`MEMCACHE_OPTIONS` reads them from a URL (``memcache://h1,h2?timeout=0.5``), merged
with keyword options by :func:`client_options` (the one rule of
:func:`~scalekit.core.options.merge_options`). :class:`MemcacheClient` checks them once and
keeps this process's :class:`Cluster` in a :class:`~scalekit.core.process.PerProcess`: made
on first use, made again in a forked child, never shared with a parent.

Placement (rendezvous hashing), replicas and node health: :mod:`._memcache_cluster`.

Operations, run on one connection inside :meth:`Cluster.run`: :func:`add_unless_live` (the
``add``, ``gets``, ``cas`` retry loop), and one lease (a lock) primitive, :func:`take_lease`
with ``add`` and :func:`release_lease`, a compare-and-delete: ``gets``, then ``cas`` with a
negative exptime, which never removes a lease someone else took meanwhile. :func:`exptime`
turns a TTL into memcached's whole seconds. :func:`dump_keys` lists a server's keys (for a
cache's ``clear``): memcached has no command to list keys by prefix, so it walks every item
with ``lru_crawler metadump hash``, fine for a deploy or an admin task, not per request.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

from pymemcache.client.base import Client

from scalekit.connect._memcache_cluster import Cluster, node_name
from scalekit.core.checks import MAX_TTL
from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.core.options import merge_options
from scalekit.core.process import PerProcess
from scalekit.core.urls import BackendURL, MemcacheURL

__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "MEMCACHE_OPTIONS",
    "ClientSettings",
    "Cluster",
    "MemcacheClient",
    "add_unless_live",
    "client_options",
    "dump_keys",
    "exptime",
    "node_name",
    "release_lease",
    "take_lease",
]

_T = TypeVar("_T")

# Tries of a compare-and-set before giving up to writers that keep racing with it.
_CAS_ATTEMPTS = 5

#: The largest stored value by default: memcached's default item size (``-I 1m``) less room
#: for the item header and the longest key. Bigger writes raise :class:`SerializationError`
#: before any I/O, because a ``set`` the server refuses as too large also drops the value
#: stored before it.
DEFAULT_MAX_VALUE_SIZE = 1024 * 1024 - 512

#: The URL query options of every memcache client, and their converters.
MEMCACHE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "connect_timeout": float,
    "timeout": float,
    "retry_attempts": int,
    "retry_timeout": float,
    "dead_timeout": float,
    "max_pool_size": int,
    "max_value_size": int,
}


def client_options(
    settings: BackendURL,
    given: dict[str, Any],
    *,
    what: str,
    extra: dict[str, Callable[[str], Any]] | None = None,
) -> dict[str, Any]:
    """The keywords that open a :class:`MemcacheClient` from ``settings``: its servers, its
    masked URL, and :data:`MEMCACHE_OPTIONS` (plus the user's ``extra``) from the URL's query,
    overridden by ``given``. ``what`` names the user in the error for another kind of URL."""
    if not isinstance(settings, MemcacheURL):
        raise ConfigError(f"{settings.masked}: {what} needs a memcache:// URL")
    merged = merge_options(settings, {**MEMCACHE_OPTIONS, **(extra or {})}, given)
    return {"servers": settings.servers, "url": settings.masked, **merged}


@dataclass(frozen=True)
class ClientSettings:
    """A memcache client's nodes, its URL (masked: it names the client in errors and logs)
    and its options with their defaults: the keyword options of every memcache user, the
    :class:`Settings` its :class:`Cluster` reads. :meth:`checked` makes one."""

    servers: tuple[tuple[str, int], ...]
    url: str
    connect_timeout: float = 1.0
    timeout: float = 1.0
    retry_attempts: int = 2
    retry_timeout: float = 1.0
    dead_timeout: float = 60.0
    max_pool_size: int | None = None
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE

    @classmethod
    def checked(
        cls,
        servers: Iterable[tuple[str, int]],
        url: str | None,
        options: dict[str, Any],
        *,
        label: str = "option",
        min_value_size: int = 1,
    ) -> ClientSettings:
        """The settings of ``servers`` with keyword ``options`` (an unknown one is a
        ``TypeError``), each checked; ``label`` names the options in errors ("option",
        "cache option"), ``min_value_size`` is the least ``max_value_size``."""
        nodes = tuple((str(host), int(port)) for host, port in servers)
        url = url or "memcache://" + ",".join(node_name(node) for node in nodes)
        if not nodes:
            raise ConfigError(f"{url}: no memcached server given")
        given = cls(nodes, url, **options)

        def seconds(name: str, positive: bool = False) -> float:
            value = getattr(given, name)
            number = (
                value if isinstance(value, (int, float)) and not isinstance(value, bool) else -1
            )
            if not (number > 0 if positive else number >= 0) or not math.isfinite(number):
                least = "more than 0" if positive else "0 or more"
                raise ConfigError(f"{url}: {label} {name}={value!r} must be {least} seconds")
            return float(number)

        def count(name: str, minimum: int) -> int:
            value = getattr(given, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(
                    f"{url}: {label} {name}={value!r} must be a whole number >= {minimum}"
                )
            return value

        return cls(
            nodes,
            url,
            connect_timeout=seconds("connect_timeout", positive=True),
            timeout=seconds("timeout", positive=True),
            retry_timeout=seconds("retry_timeout"),
            dead_timeout=seconds("dead_timeout"),
            retry_attempts=count("retry_attempts", 0),
            max_pool_size=None if given.max_pool_size is None else count("max_pool_size", 1),
            max_value_size=count("max_value_size", min_value_size),
        )


class MemcacheClient:
    """What a memcache session store and cache backend share: the client settings, checked
    once and kept as attributes (``store.timeout``...), and this process's cluster.
    ``option_label`` names the options in errors ("option", "cache option")."""

    option_label = "option"

    def _configure_client(
        self,
        servers: Iterable[tuple[str, int]],
        url: str | None,
        options: dict[str, Any],
        *,
        min_value_size: int,
        error: type[StoreUnavailable],
        label: str,
        logger: logging.Logger,
        serde: Any = None,
        replicas: int = 1,
        stale: Callable[[bytes, Any], bool] | None = None,
    ) -> None:
        """Check the settings (:meth:`ClientSettings.checked`) and ``replicas`` (1 to the
        number of nodes); they, ``error``, ``label``, ``logger``, ``serde`` and ``stale`` go
        to the :class:`Cluster`, made in each process that runs a command. Its factory holds the
        settings, not this object: a client nobody closes still goes, and its sockets with
        it, as soon as nobody holds it."""
        settings = ClientSettings.checked(
            servers, url, options, label=self.option_label, min_value_size=min_value_size
        )
        distinct = len(set(settings.servers))
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not (
            1 <= replicas <= distinct
        ):  # fmt: skip
            raise ConfigError(
                f"{settings.url}: {self.option_label} replicas={replicas!r} must be a whole "
                f"number from 1 to the number of servers ({distinct})"
            )
        vars(self).update(dataclasses.asdict(settings), replicas=replicas)
        self._cluster = PerProcess(
            partial(Cluster, settings, error=error, label=label, logger=logger, serde=serde,
                    replicas=replicas, stale=stale),
            Cluster.close,
        )  # fmt: skip

    def _run(self, action: str, key: bytes, command: Callable[[Client], _T]) -> _T:
        """``command`` on a connection to the node of ``key`` (see :meth:`Cluster.run`)."""
        return self._cluster.get().run(action, key, command)

    def _each_replica(
        self, action: str, key: bytes, command: Callable[[Client], _T], *,
        skipped: list[str] | None = None,
    ) -> Iterator[tuple[str, _T]]:  # fmt: skip
        """``command`` on each replica of ``key`` (see :meth:`Cluster.each_replica`)."""
        return self._cluster.get().each_replica(action, key, command, skipped=skipped)

    def _run_at(self, name: str, action: str, command: Callable[[Client], _T]) -> _T:
        """``command`` on the node ``name`` (see :meth:`Cluster.run_at`)."""
        return self._cluster.get().run_at(name, action, command)

    def _remember_missed(self, names: Iterable[str], key: bytes, written: Any) -> None:
        """The nodes ``names`` missed a write of ``written`` to ``key`` that another replica
        got (see :meth:`Cluster.remember_missed`)."""
        cluster = self._cluster.get()
        for name in names:
            cluster.remember_missed(name, key, written)

    def _run_on_each(self, action: str, command: Callable[[Client], _T]) -> list[_T]:
        """``command`` on every node (see :meth:`Cluster.run_on_each`)."""
        return self._cluster.get().run_on_each(action, command)

    def close(self) -> None:
        """Close this process's connections (they reopen on next use); a forked child
        leaves its parent's alone."""
        self._cluster.reset()


def exptime(ttl: float | None) -> int:
    """Memcached's exptime for a TTL in seconds (``None``: 0, no expiry), so that an item
    lives at least ``ttl`` seconds: rounded up plus one, because memcached's whole-second
    clock may expire an item given N seconds after only N-1; at most 30 days, above which
    memcached reads a date."""
    return 0 if ttl is None else min(math.ceil(ttl) + 1, MAX_TTL)


def add_unless_live(
    conn: Client, key: bytes, value: bytes, expire: int, live: Callable[[Any], bool]
) -> bool:
    """Store ``value`` under ``key`` unless an item ``live`` says is still in force holds
    it: ``add``, else ``gets`` and, for an item past its own end, ``cas``. Retried while
    other writers race with it; true if stored."""
    for _ in range(_CAS_ATTEMPTS):
        if conn.add(key, value, expire, noreply=False):
            return True
        found, cas = conn.gets(key)
        if found is None:
            continue  # gone since the add: try again
        if live(found):
            return False
        if conn.cas(key, value, cas, expire, noreply=False):
            return True
    return False


def take_lease(
    conn: Client,
    key: bytes,
    holder: bytes,
    expire: int,
    live: Callable[[Any], bool] | None = None,
) -> bool:
    """Take the lease (lock) ``key`` for ``holder`` with ``add``: refused while memcached
    keeps another holder's. With ``live``, a lease whose own recorded end has passed
    (``live`` false) is taken over by compare-and-set. True if taken."""
    if live is None:
        return conn.add(key, holder, expire, noreply=False) is True
    return add_unless_live(conn, key, holder, expire, live)


def release_lease(conn: Client, key: bytes, held: Callable[[Any], bool]) -> bool:
    """Delete the lease ``key`` if ``held`` says its value is still ours: ``gets``, then
    ``cas`` with a negative exptime, which expires it at once only if nobody took it since
    the ``gets`` (a compare-and-delete). True if released."""
    found, cas = conn.gets(key)
    if found is None or not held(found):
        return False
    return conn.cas(key, b"", cas, expire=-1, noreply=False) is True


def dump_keys(server: tuple[str, int], connect_timeout: float, timeout: float) -> list[bytes]:
    """Every key on ``server``, from ``lru_crawler metadump hash`` (a walk of the hash table:
    unlike ``metadump all``, it skips no slab class whose last crawl is still winding down).

    Read on a socket of its own: pymemcache's ``raw_command`` keeps only the last chunk of a
    long reply.
    """
    deadline = time.monotonic() + 3
    with socket.create_connection(server, timeout=connect_timeout) as sock:
        sock.settimeout(timeout)
        while True:
            sock.sendall(b"lru_crawler metadump hash\r\n")
            out = _read_reply(sock)
            if out.startswith(b"NOTSTARTED"):
                return []  # nothing to crawl
            if out.endswith(b"END") and not out.startswith(b"BUSY"):
                break
            if time.monotonic() > deadline:  # "BUSY" or "ERROR": a dump still runs
                raise RuntimeError(
                    f"'lru_crawler metadump hash' kept failing ({out[:60]!r}); clearing needs "
                    "memcached 1.6 with its LRU crawler on (the default)"
                )
            time.sleep(0.01)
    return [unquote_to_bytes(line.split(b" ", 1)[0][4:]) for line in out.split(b"\n")
            if line.startswith(b"key=")]  # fmt: skip


def _read_reply(sock: socket.socket) -> bytes:
    """One reply, up to its ``\\r\\n`` (dump lines end with a bare ``\\n``)."""
    chunks: list[bytes] = []
    last = b""
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionResetError("memcached closed the connection during a key dump")
        chunks.append(data)
        if b"\r\n" in last + data:
            reply = b"".join(chunks)
            return reply[: reply.index(b"\r\n")]
        last = data[-1:]
