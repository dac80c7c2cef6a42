"""Redis, the one connector under every Redis user (sessions, cache, maintenance flag).

``open_redis("redis://cache:6379/0?socket_timeout=0.5")`` returns a
:class:`RedisConnector`. Every piece stands on the same floor:

* :mod:`.topology` - where commands go. :class:`Standalone` is one server over TCP, TLS
  (``rediss://``) or a unix socket; :class:`Sentinel` (``redis+sentinel://``) the primary
  that Redis Sentinels name; Cluster later is a new :class:`Topology`.
* :mod:`.lean` - the per-request path, :meth:`RedisConnector.call`: hiredis on a blocking
  socket whose timeouts are kernel socket options, two system calls per command (on a
  2-CPU VM a loopback command takes about 33 µs this way, 80 µs through ``redis.Redis``).
* :mod:`.tracking` - :meth:`RedisConnector.cached`, a per-process cache of reads that Redis
  keeps fresh with ``CLIENT TRACKING``.
* :mod:`.scripts` - :class:`Script`, Lua that declares every key it touches, run by
  ``EVALSHA``; and the one lease: ``try_lease`` is ``SET NX PX``, ``release_lease`` a
  compare-and-delete script, the same for the session lock and the cache's single flight.
* :mod:`.namespace` - :class:`Namespace`, ``scalekit:<piece>:<app>:``, hash-tagged when a
  topology needs it.

Options (:data:`REDIS_OPTIONS`) are merged by :func:`scalekit.core.options.merge_options`:
URL query options, then keywords. Connections are made per process, after a fork too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from scalekit.connect.redis.connector import REDIS_OPTIONS, RedisConnector
from scalekit.connect.redis.namespace import Namespace
from scalekit.connect.redis.scripts import Script
from scalekit.connect.redis.topology import Sentinel, Standalone, Topology
from scalekit.core import urls
from scalekit.core.options import merge_options

__all__ = [
    "REDIS_OPTIONS",
    "Namespace",
    "RedisConnector",
    "Script",
    "Sentinel",
    "Standalone",
    "Topology",
    "open_redis",
]


def open_redis(url_or_settings: str | urls.RedisURL, **options: Any) -> RedisConnector:
    """The connector to the Redis a URL names (``redis://``, ``rediss://``, ``unix://``,
    ``redis+sentinel://``).

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
    if isinstance(settings, urls.SentinelURL):
        return RedisConnector(Sentinel(settings, **options))
    return RedisConnector(Standalone(settings, **options))
