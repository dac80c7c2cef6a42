"""Session stores, opened by URL: ``open_store("redis://cache:6379/0", app_name="shop")``.

=====================  ==========================================================
URL                    store
=====================  ==========================================================
``file:///var/s``      :class:`FileStore`: one file per session, sharded folders
``sqlite://x.sqlite``  :class:`DatabaseStore`: web2py's ``web2py_session_<app>`` table
``postgres://...``     :class:`DatabaseStore` (also ``mysql://``)
``memcache://h1,h2``   :class:`MemcacheStore`: consistent hashing over the nodes
``redis://h/0``        :class:`RedisStore` (also ``rediss://``, ``unix://``,
                       ``redis+sentinel://``, ``redis+cluster://``, ``valkey...``)
=====================  ==========================================================
"""

from __future__ import annotations

from typing import Any

from scalekit.core import urls
from scalekit.core.compat import renamed_keyword
from scalekit.core.registry import Backends
from scalekit.sessions.stores.base import ANY, Record, SessionStore

__all__ = [
    "ANY",
    "DatabaseStore",
    "FileStore",
    "MemcacheStore",
    "Record",
    "RedisStore",
    "SessionStore",
    "open_store",
]

#: kind of URL -> (module, class), imported on first use
STORES = Backends({
    "file": ("scalekit.sessions.stores.file", "FileStore"),
    "sqlite": ("scalekit.sessions.stores.database", "DatabaseStore"),
    "database": ("scalekit.sessions.stores.database", "DatabaseStore"),
    "memcache": ("scalekit.sessions.stores.memcache", "MemcacheStore"),
    "redis": ("scalekit.sessions.stores.redis", "RedisStore"),
})  # fmt: skip


@renamed_keyword("app", "app_name")
def open_store(
    url: str, app_name: str = "app", *, create: bool = True, **options: Any
) -> SessionStore:
    """Open the session store a URL names; ``options`` go to the store's constructor.

    Options may also be given in the URL's query (``redis://h/0?socket_timeout=0.5``);
    an unknown option raises :class:`scalekit.core.errors.ConfigError`. ``create=False``
    opens an existing store only, as ``sessions2trash`` does: a missing folder, database
    file or session table is :class:`scalekit.core.errors.StoreNotFound`, and nothing is
    created (Redis and memcached keep no store per app: nothing to check there).
    """
    settings = urls.parse(url, kinds=STORES.kinds)
    if not create:  # passed only when false: a store written before it need not know it
        options["create"] = False
    return STORES.for_kind(settings.kind).from_url(settings, app_name=app_name, **options)


__getattr__ = STORES.export
