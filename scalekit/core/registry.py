"""Backend classes by URL kind, imported on first use: what every piece's opener stands on.

A piece lists its backends as ``kind -> (module, class)``; opening a ``redis://`` store
imports the Redis module only, so an app that never names a database never loads pydal.
The piece's package exports the classes lazily too (``from scalekit.sessions.stores import
RedisStore``), through :meth:`Backends.export`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["Backends"]


class Backends:
    """The backend classes of one protocol, by the URL kind each serves."""

    def __init__(self, classes: Mapping[str, tuple[str, str]]):
        self._classes = dict(classes)
        self._kind_of = {name: kind for kind, (_, name) in self._classes.items()}

    @property
    def kinds(self) -> set[str]:
        """The URL kinds (see :func:`scalekit.core.urls.parse`) these backends serve."""
        return set(self._classes)

    def for_kind(self, kind: str) -> type:
        """The class serving URLs of ``kind``, its module imported now if not yet."""
        module, name = self._classes[kind]
        return getattr(importlib.import_module(module), name)

    def export(self, name: str) -> Any:
        """A package's ``__getattr__``: the backend class called ``name``, imported now."""
        if name in self._kind_of:
            return self.for_kind(self._kind_of[name])
        raise AttributeError(name)
