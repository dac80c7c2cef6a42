"""Deferred tasks: run a callable later, on any server, and never lose it.

``tasks = Tasks("redis://cache:6379/0", secret=...)``, then ``tasks.defer(fn, *args)``
(or the module-level :func:`defer` on the ``default=True`` one); ``scalekit tasks worker``
runs them.

Engines by URL (:func:`~scalekit.tasks.engines.open_engine`): Redis streams or one SQL table.
"""

from __future__ import annotations

from scalekit.tasks.engines import open_engine
from scalekit.tasks.errors import (
    NotDeferrable,
    PayloadTooLarge,
    PermanentTaskFailure,
    SingularTaskFailure,
    TaskAlreadyExists,
    TaskTimeout,
)
from scalekit.tasks.facade import Tasks, default_tasks, defer

__all__ = [
    "NotDeferrable",
    "PayloadTooLarge",
    "PermanentTaskFailure",
    "SingularTaskFailure",
    "TaskAlreadyExists",
    "TaskTimeout",
    "Tasks",
    "default_tasks",
    "defer",
    "open_engine",
]
