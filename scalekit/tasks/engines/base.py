"""The engine protocol: where deferred tasks wait, who runs them, what happens to failures.

An engine stores opaque payloads (the :class:`~scalekit.tasks.task.Task` codec makes them);
it knows queues, times, names and leases, never callables. Every engine passes the same
conformance suite (:mod:`scalekit.testing.tasks`).

A task is in one of four states: ``waiting`` (ready to run), ``delayed`` (its ``eta`` or its
retry time is in the future), ``running`` (handed to a worker, which holds a lease on it) and
``dead`` (failed for good, kept with its traceback until revived or purged). A task that
succeeds is deleted. Within a queue tasks are handed out oldest first (by the time they
became ready; a delayed task that just came due, or one handed out again after its lease
expired, may go out before or after tasks enqueued meanwhile: the engines differ). A
lease not renewed for ``visibility_timeout`` seconds has expired: the worker is taken for
dead and the task is handed out again, its ``deliveries`` raised. Every change of state is
one atomic step in the engine (a Lua script, one SQL transaction): no crash of a worker or
of the engine's client between two commands can lose a task or hand it to two workers at
once within its lease.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scalekit.core.errors import ConfigError, InvalidArgument

__all__ = [
    "DEAD",
    "DELAYED",
    "RUNNING",
    "STATES",
    "WAITING",
    "Claim",
    "Engine",
    "TaskInfo",
    "check_state",
    "positive_seconds",
]

WAITING, DELAYED, RUNNING, DEAD = "waiting", "delayed", "running", "dead"
STATES = (WAITING, DELAYED, RUNNING, DEAD)


def check_state(state: str) -> None:
    """:class:`InvalidArgument` unless ``state`` is one of :data:`STATES`."""
    if state not in STATES:
        raise InvalidArgument(f"state {state!r} is not one of {', '.join(STATES)}")


def positive_seconds(value: Any, what: str) -> float:
    """An engine's duration option: a number of seconds more than 0, else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Claim:
    """A task handed to one worker, under a lease."""

    queue: str
    task_id: str
    payload: bytes
    #: times the engine handed this payload out, this one included: more than 1 means a
    #: worker died (or lost its lease) while running it
    deliveries: int
    #: the engine's handle of this hand-out (a stream entry id, a lease token)
    receipt: str


@dataclass(frozen=True)
class TaskInfo:
    """What the operations commands show of one task."""

    queue: str
    task_id: str
    state: str
    payload: bytes
    #: Unix time it becomes (or became) ready; None when enqueued to run at once
    eta: float | None
    name: str | None
    deliveries: int
    #: the dead letter's reason (a traceback), else None
    error: str | None


class Engine(abc.ABC):
    """One task store, opened by URL for one app (``open_engine(url, app_name=...)``).

    ``visibility_timeout``: seconds a lease lasts without :meth:`extend`; ``name_ttl``:
    seconds a task name stays taken after its task was enqueued.
    Engines open their connections lazily, per process (fork-safe), and are thread-safe.
    """

    visibility_timeout: float
    name_ttl: float

    @classmethod
    @abc.abstractmethod
    def from_url(cls, settings: Any, app_name: str = "app", **options: Any) -> Engine:
        """The engine for parsed URL ``settings`` (:func:`scalekit.core.urls.parse`);
        ``options`` merged with the URL's query (:func:`scalekit.core.options.merge_options`),
        ``visibility_timeout`` and ``name_ttl`` among them."""

    @abc.abstractmethod
    def enqueue(
        self,
        queue: str,
        task_id: str,
        payload: bytes,
        *,
        eta: float | None = None,
        name: str | None = None,
    ) -> None:
        """Store a task: ``waiting`` if ``eta`` is None or past, else ``delayed`` until it.
        With ``name``: :class:`~scalekit.tasks.errors.TaskAlreadyExists` if a task of this
        queue took that name within ``name_ttl`` (checked and taken in the same atomic step
        as the enqueue, so of two racing enqueues exactly one succeeds)."""

    @abc.abstractmethod
    def claim(
        self, queues: Sequence[str], consumer: str, *, count: int = 1, wait: float = 0.0
    ) -> list[Claim]:
        """Hand out up to ``count`` ready tasks of ``queues`` (earlier queues first) to
        ``consumer`` (a worker's unique name), each under a new lease. Delayed tasks now due
        become ready (each once, however many workers claim at the same time) and tasks
        whose lease expired are handed out again, within a fraction of a second (Redis looks
        every quarter second). With nothing ready, wait up to
        ``wait`` seconds for one (waking when a delayed task comes due); then ``[]``."""

    @abc.abstractmethod
    def extend(self, claims: Sequence[Claim]) -> list[Claim]:
        """Renew the leases of running ``claims`` for another ``visibility_timeout``; the
        ones whose lease was lost (handed to another worker, or gone) are returned."""

    @abc.abstractmethod
    def ack(self, claim: Claim) -> None:
        """The task succeeded: delete it (also when its lease was lost meanwhile: it ran)."""

    @abc.abstractmethod
    def retry(self, claim: Claim, payload: bytes, eta: float) -> bool:
        """The task failed and will run again: in one step, end this run and make the task
        (same id, the new ``payload``) ``delayed`` until ``eta``. False, and nothing done,
        when the lease was lost (another worker runs it now)."""

    @abc.abstractmethod
    def bury(self, claim: Claim, payload: bytes, error: str) -> bool:
        """The task failed for good: in one step, end this run and keep it ``dead`` with
        ``error``. False, and nothing done, when the lease was lost."""

    @abc.abstractmethod
    def revive(self, queue: str, task_id: str, payload: bytes | None = None) -> bool:
        """A dead task (with ``payload`` if given) becomes ``waiting``; False if ``queue``
        has no dead task of that id."""

    @abc.abstractmethod
    def find(self, task_id: str, queue: str | None = None) -> TaskInfo | None:
        """The task of that id in ``queue`` (in any queue if None), whatever its state."""

    @abc.abstractmethod
    def tasks(self, queue: str, state: str, limit: int = 50) -> list[TaskInfo]:
        """Up to ``limit`` tasks of ``queue`` in ``state``, in the order they will run
        (dead ones: most recently buried first)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: number}}`` for every queue that has or had tasks."""

    @abc.abstractmethod
    def purge(self, queue: str, state: str | None = None) -> int:
        """Delete the tasks of ``queue`` in ``state`` (every state if None); how many.
        Names stay taken until their ``name_ttl`` ends."""

    @abc.abstractmethod
    def try_lease(self, key: str, holder: str, ttl: float) -> bool:
        """Take (or renew, if ``holder`` has it) the lease ``key`` for ``ttl`` seconds;
        False if another holder has it. Elects one scheduler among many."""

    @abc.abstractmethod
    def release_lease(self, key: str, holder: str) -> None:
        """Give up ``key`` if ``holder`` has it."""

    def close(self) -> None:  # noqa: B027 (optional: engines without connections keep it)
        """Release connections; the engine reopens them on next use."""
