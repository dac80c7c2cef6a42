"""Deferred tasks: run a callable later, on any server, and never lose it.

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

__all__ = [
    "NotDeferrable",
    "PayloadTooLarge",
    "PermanentTaskFailure",
    "SingularTaskFailure",
    "TaskAlreadyExists",
    "TaskTimeout",
    "open_engine",
]
