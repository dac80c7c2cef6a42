"""The demo's cache, shared by the views and the task that writes receipts: the hit counter
and the rendered entries (rebuilt by the request that signs and by that task)."""

from __future__ import annotations

from collections.abc import Callable

import config
import templates
from pydal import DAL

from scalekit.cache import Cache

_SHARED = "redis" if config.CACHE.startswith(("redis:", "rediss:", "unix:")) else "disk"
cache = Cache(config.APP, **{_SHARED: config.CACHE}, memcache=config.MEMCACHE)
#: The hit counter: Redis on a cluster (atomic HINCRBY), the disk cache on one machine.
counter = getattr(cache, _SHARED)
#: The rendered entries: memcached where there is one (losing it costs one query).
fragments = cache.memcache if config.MEMCACHE else counter


def entries(connect: Callable[[], DAL], *, refresh: bool = False) -> tuple[str, float | None]:
    """The last 20 entries as HTML, and the time (Unix) the oldest receipt still pending
    among them was deferred (None: none pending). Cached 30 s; read from ``connect()`` on a
    miss; ``refresh``: rebuilt now (from the primary, by whoever just changed an entry)."""
    html, since = fragments("entry-list", lambda: _render(connect()), 0 if refresh else 30)
    return html, since


def _render(dal: DAL) -> list:
    rows = dal(dal.entry).select(orderby=~dal.entry.id, limitby=(0, 20))
    pending = [r.created_on.timestamp() for r in rows if r.receipt_task and not r.receipt_on]
    html = templates.entries(
        [(r.id, r.author, r.created_on.strftime("%Y-%m-%d %H:%M"), r.body,
          r.receipt_task, r.receipt_by, r.picture) for r in rows]
    )  # fmt: skip
    return [html, min(pending, default=None)]
