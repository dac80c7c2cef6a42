"""Task engines, opened by URL: ``open_engine("redis://cache:6379/0", app_name="shop")``.

=========================================  ==============================================
URL                                        engine
=========================================  ==============================================
``redis://h:6379/0`` (``rediss://``,       :class:`RedisEngine`: a Redis stream and
``unix://``, ``redis+sentinel://``,        consumer group per queue (on a Cluster, each
``redis+cluster://``, ``valkey...``)       queue in a slot of its own)
``sqlite://tasks.sqlite``,                 :class:`SQLEngine`: one table through pydal,
``postgres://``, ``mysql://``              claims with ``FOR UPDATE SKIP LOCKED``
=========================================  ==============================================
"""

from __future__ import annotations

from typing import Any

from scalekit.core import urls
from scalekit.core.errors import ConfigError
from scalekit.core.registry import Backends
from scalekit.tasks.engines.base import Claim, Engine, TaskInfo

__all__ = ["Claim", "Engine", "RedisEngine", "SQLEngine", "TaskInfo", "open_engine"]

#: kind of URL -> (module, class), imported on first use
ENGINES = Backends({
    "redis": ("scalekit.tasks.engines.redis", "RedisEngine"),
    "sqlite": ("scalekit.tasks.engines.sql", "SQLEngine"),
    "database": ("scalekit.tasks.engines.sql", "SQLEngine"),
})  # fmt: skip


def open_engine(url: str, app_name: str = "app", *, create: bool = True, **options: Any) -> Engine:
    """Open the task engine a URL names; ``options`` (also in the URL's query) go to the
    engine's ``from_url``; an unknown one is a :class:`~scalekit.core.errors.ConfigError`.
    ``create=False`` (the commands that read or clean up) opens existing tables only: a
    missing SQLite file or table is :class:`~scalekit.core.errors.StoreNotFound`."""
    if not isinstance(url, str):
        raise ConfigError(f"a task engine is a URL, not {url!r:.60}")
    settings = urls.parse(url, kinds=ENGINES.kinds)
    if not create:  # passed only when false: an engine written before it need not know it
        options["create"] = False
    return ENGINES.for_kind(settings.kind).from_url(settings, app_name=app_name, **options)


__getattr__ = ENGINES.export
