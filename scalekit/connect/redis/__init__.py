"""Redis, the one connector under every Redis user (sessions, cache, maintenance flag).

``open_redis("redis://cache:6379/0?socket_timeout=0.5")`` returns a
:class:`RedisConnector`. Every piece stands on the same floor:

* :mod:`.topology` - where commands go. :class:`Standalone` is one server over TCP, TLS
  (``rediss://``) or a unix socket; :class:`Sentinel` (``redis+sentinel://``) the primary
  that Redis Sentinels name; :class:`Cluster` (``redis+cluster://``) the nodes of a Redis
  Cluster, by the slot map it reads from them (``hash_tags`` and ``routes`` are true).
* :mod:`.cluster` - :class:`ClusterConnector`, what :func:`open_redis` returns on a
  Cluster: each command goes to its key's node (``MOVED``, ``ASK``, ``TRYAGAIN``,
  ``CLUSTERDOWN`` followed), each node with its own links and cache of reads;
  :meth:`~RedisConnector.scan` walks every primary, :meth:`~RedisConnector.unlink`
  batches keys by slot.
* :mod:`.lean` - the per-request path, :meth:`RedisConnector.call`: hiredis on a blocking
  socket whose timeouts are kernel socket options, two system calls per command (on a
  2-CPU VM a loopback command takes about 33 µs this way, 80 µs through ``redis.Redis``).
* :mod:`.tracking` - :meth:`RedisConnector.cached`, a per-process cache of reads that Redis
  keeps fresh with ``CLIENT TRACKING``.
* :mod:`.scripts` - :class:`Script`, Lua that declares every key it touches, run by
  ``EVALSHA``; and the one lease: ``try_lease`` is ``SET NX PX``, ``release_lease`` a
  compare-and-delete script, the same for the session lock and the cache's single flight.
* :mod:`.namespace` - :class:`Namespace`, ``scalekit:<piece>:<app>:``, hash-tagged when a
  topology needs it (a piece whose commands each touch one key asks to ``spread``).

Failover: a reply that says the command did not run (``MOVED``, ``ASK``, ``TRYAGAIN``,
``CLUSTERDOWN``, ``READONLY``, ``LOADING``, ``MASTERDOWN``) is retried where the topology
says the primary is now; after a lost connection a command runs again (once) only when the
caller passed ``safe=True``. A lost or demoted node's links and cached reads go, and the
cache of reads empties whenever a new primary is found. ``run(..., replicas=n)`` follows the
script with ``WAIT`` on the same connection and raises :class:`NotReplicated` (a
``redis.RedisError``) when fewer than ``n`` replicas acknowledged the write: it is then on
the primary only, and a failover could lose it.

Options (:data:`REDIS_OPTIONS`) are merged by :func:`scalekit.core.options.merge_options`:
URL query options, then keywords. Connections are made per process, after a fork too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from scalekit.connect.redis.cluster import ClusterConnector
from scalekit.connect.redis.connector import REDIS_OPTIONS, NotReplicated, RedisConnector
from scalekit.connect.redis.namespace import Namespace
from scalekit.connect.redis.scripts import Script
from scalekit.connect.redis.topology import Cluster, Sentinel, Standalone, Topology
from scalekit.core import urls
from scalekit.core.options import merge_options

__all__ = [
    "REDIS_OPTIONS",
    "Cluster",
    "ClusterConnector",
    "Namespace",
    "NotReplicated",
    "RedisConnector",
    "Script",
    "Sentinel",
    "Standalone",
    "Topology",
    "open_redis",
]


def open_redis(url_or_settings: str | urls.RedisURL, **options: Any) -> RedisConnector:
    """The connector to the Redis a URL names (``redis://``, ``rediss://``, ``unix://``,
    ``redis+sentinel://``, ``redis+cluster://``, and the ``valkey`` aliases).

    From a URL, its query options are read and ``options`` override them. From parsed
    settings, ``options`` are all there is: a piece with options of its own has merged the
    URL's already (``merge_options(settings, {**REDIS_OPTIONS, ...}, given)``) and passes
    the Redis ones on. Unknown options raise :class:`~scalekit.core.errors.ConfigError`.
    """
    if isinstance(url_or_settings, str):
        settings = urls.parse(url_or_settings, kinds={"redis"})
        options = merge_options(settings, REDIS_OPTIONS, options)
    else:
        settings = url_or_settings  # its query options are the caller's: check the keywords
        options = merge_options(dataclasses.replace(settings, options={}), REDIS_OPTIONS, options)
    if isinstance(settings, urls.ClusterURL):
        return ClusterConnector(Cluster(settings, **options))
    if isinstance(settings, urls.SentinelURL):
        return RedisConnector(Sentinel(settings, **options))
    return RedisConnector(Standalone(settings, **options))
