"""The exceptions of deferred tasks: two a task raises to steer its retries (App Engine's
``deferred`` names), and the ones :func:`~scalekit.tasks.defer` raises."""

from __future__ import annotations

from scalekit.core.errors import InvalidArgument, ScalekitError

__all__ = [
    "NotDeferrable",
    "PayloadTooLarge",
    "PermanentTaskFailure",
    "SingularTaskFailure",
    "TaskAlreadyExists",
    "TaskTimeout",
]


class PermanentTaskFailure(ScalekitError):
    """Raised by a task: it failed and retrying cannot help; it goes to the dead letters
    at once (one error logged, one ticket)."""


class SingularTaskFailure(ScalekitError):
    """Raised by a task: retry it after the usual backoff, without logging an error (a
    remote service said "later"). The attempt still counts towards ``max_attempts``."""


class TaskAlreadyExists(ScalekitError):
    """A task named ``_name`` was enqueued in this queue within ``name_ttl``: it is not
    enqueued again."""


class TaskTimeout(ScalekitError):
    """A task ran longer than its ``_timeout`` and was stopped; counted as a failure."""


class NotDeferrable(InvalidArgument):
    """The callable cannot be found again by a worker (a lambda, a closure, a nested
    function, an object defined in ``__main__``) or an argument cannot be stored."""


class PayloadTooLarge(InvalidArgument):
    """The stored task (callable, arguments, options) is larger than ``max_payload``."""
