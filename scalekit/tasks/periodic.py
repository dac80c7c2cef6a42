"""Periodic tasks: a callable deferred once per cron period across the whole cluster.

Every worker's supervisor runs a :class:`Scheduler` and calls :meth:`Scheduler.tick` every
few seconds; a lease in the engine (``try_lease("scheduler", ...)``) elects the one that
enqueues. For each entry it defers the latest period due (``cron.previous(now)``), named
``periodic:<entry name>:<period start as Unix time>``: a named task is enqueued once within
the engine's ``name_ttl``, so a period is enqueued once even when two schedulers both
believe they hold the lease (a lease expired during a pause) or a new holder takes over.
A period missed while everything was down is enqueued once when a scheduler comes back:
only the latest, never the backlog. A period is enqueued at most ``name_ttl`` after it
starts: later, its name may have expired, and a task already run could run again.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.tasks.callables import function_path, reference
from scalekit.tasks.cron import Cron
from scalekit.tasks.errors import TaskAlreadyExists

__all__ = ["LEASE", "PeriodicEntry", "Schedule", "Scheduler"]

log = logging.getLogger("scalekit.tasks")

#: The engine lease that elects the scheduler which enqueues.
LEASE = "scheduler"


@dataclass(frozen=True)
class PeriodicEntry:
    """One periodic task: ``function(*args, **kwargs)`` on ``queue`` at each time of ``cron``."""

    name: str
    function: Callable[..., Any]
    cron: Cron
    queue: str = "default"
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def task_name(self, period: int) -> str:
        """The task name of the period starting at Unix time ``period``."""
        return f"periodic:{self.name}:{period}"


class Schedule:
    """The periodic entries of one app, by name (a name is taken once)."""

    def __init__(self) -> None:
        self._entries: dict[str, PeriodicEntry] = {}

    def add(
        self,
        function: Callable[..., Any],
        cron: str | Cron,
        *,
        queue: str = "default",
        name: str | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> PeriodicEntry:
        """Register ``function`` to run at each time of ``cron`` (UTC); ``name`` defaults to
        the function's import path. :class:`~scalekit.tasks.errors.NotDeferrable` for a
        callable a worker could not find (a plain function: a lambda, nested or in
        ``__main__``; the rest is checked when a period is deferred, since a decorator
        registers it before its module has it), ConfigError for a bad cron or a name taken."""
        if inspect.isfunction(function):
            path = function_path(function)
        else:
            path, _ = reference(function)
        name = path if name is None else name
        if not isinstance(name, str) or not 0 < len(name) <= 150 or not name.isprintable():
            raise ConfigError(
                f"a periodic task's name is 1-150 printable characters, not {name!r:.60}"
            )
        if name in self._entries:
            raise ConfigError(f"periodic task {name!r} is already scheduled: give it a name=")
        entry = PeriodicEntry(
            name, function, cron if isinstance(cron, Cron) else Cron(cron), queue,
            tuple(args), dict(kwargs or {}),
        )  # fmt: skip
        self._entries[name] = entry
        return entry

    def __iter__(self) -> Iterator[PeriodicEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> PeriodicEntry:
        return self._entries[name]


class Scheduler:
    """Defers the entries of ``tasks.schedule`` (or ``schedule``) when due, if elected.

    Call :meth:`tick` every :attr:`interval` seconds (the worker's supervisor does); the
    holder of the lease keeps it by ticking within ``lease_ttl``, and when it stops (or
    calls :meth:`stop`) another scheduler takes over at its next tick after the lease ends.
    ``holder`` names this scheduler in the lease (unique: host, pid and a random part).
    """

    #: seconds between two ticks (a task runs at most about this late)
    interval = 5.0

    def __init__(
        self,
        tasks: Any,
        holder: str | None = None,
        *,
        schedule: Schedule | None = None,
        lease_ttl: float = 30.0,
    ) -> None:
        if not lease_ttl > 0:
            raise ConfigError(f"a scheduler's lease_ttl must be more than 0, not {lease_ttl!r}")
        self.tasks = tasks
        self.schedule = tasks.schedule if schedule is None else schedule
        self.holder = holder or f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl = lease_ttl
        self._done: dict[str, int] = {}  # entry name -> latest period known enqueued

    def tick(self, now: float | None = None) -> list[str]:
        """If elected, defer each entry's latest due period not yet enqueued; the ids of
        the tasks it deferred. ``now``: Unix time (the clock by default)."""
        if not self.schedule:
            return []
        now = time.time() if now is None else now
        engine = self.tasks.engine
        if not engine.try_lease(LEASE, self.holder, self.lease_ttl):
            return []
        ids = []
        for entry in self.schedule:
            period = int(entry.cron.previous(now).timestamp())
            if self._done.get(entry.name, -1) >= period:
                continue
            if now - period < engine.name_ttl:
                try:
                    ids.append(self._defer(entry, period))
                except TaskAlreadyExists:
                    pass  # another scheduler did, or this one before a restart
                except StoreUnavailable:
                    raise  # not done: the next tick tries again
                except Exception:
                    log.exception("periodic %s: could not defer it", entry.name)
            else:
                log.info(
                    "periodic %s: the period of %s started over name_ttl (%g s) ago: not "
                    "enqueued (it ran then, or everything was down longer)",
                    entry.name, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(period)),
                    engine.name_ttl,
                )  # fmt: skip
            self._done[entry.name] = period
        return ids

    def _defer(self, entry: PeriodicEntry, period: int) -> str:
        task_id = self.tasks.defer(
            entry.function, *entry.args, _name=entry.task_name(period), _queue=entry.queue,
            **entry.kwargs,
        )  # fmt: skip
        log.info("periodic %s: deferred for %d as %s", entry.name, period, task_id)
        return task_id

    def stop(self) -> None:
        """Give up the lease (if held), so another scheduler takes over at once."""
        self.tasks.engine.release_lease(LEASE, self.holder)
