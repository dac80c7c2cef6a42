"""Fork safety, one mechanism for every client: values made lazily in the process that uses them.

gunicorn imports the app (and so opens stores) in its master, then forks workers. A child
must not share the parent's sockets, pools or file handles, nor inherit a lock that a
parent's thread held. Every client scalekit keeps lives in a :class:`PerProcess` (or a
:class:`PerThread`): it is made on first use, and made again in a forked child, which is
told by a fork generation that ``os.register_at_fork`` bumps, so no ``getpid`` system call
sits on a request's path.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["PerProcess", "PerThread", "after_fork"]

_T = TypeVar("_T")

_generation = 0
_after_fork: weakref.WeakSet = weakref.WeakSet()


def after_fork(obj: Any) -> None:
    """Call ``obj._after_fork()`` in every forked child while ``obj`` is alive: for objects
    that hold locks or handles of their own beside their :class:`PerProcess` values."""
    _after_fork.add(obj)


def _forked() -> None:
    global _generation
    _generation += 1
    for obj in list(_after_fork):
        obj._after_fork()


os.register_at_fork(after_in_child=_forked)


class PerProcess(Generic[_T]):
    """A value ``factory()`` makes on first use in each process; ``close`` (if given) ends
    this process's value in :meth:`reset`. A parent's value is dropped in a child, never
    closed there: closing would end the parent's sockets too."""

    __slots__ = ("_close", "_factory", "_generation", "_lock", "_value")

    def __init__(self, factory: Callable[[], _T], close: Callable[[_T], Any] | None = None):
        self._factory, self._close = factory, close
        self._value: _T | None = None
        self._generation = -1
        self._lock = (_generation, threading.Lock())

    def get(self) -> _T:
        """This process's value, made now if this process has none."""
        if self._generation != _generation:
            self._make()
        return self._value  # type: ignore[return-value]

    def _make(self) -> None:
        lock_generation, lock = self._lock
        if lock_generation != _generation:  # a lock a parent's thread may hold: a new one
            self._lock = lock_generation, lock = _generation, threading.Lock()
        with lock:
            if self._generation != _generation:
                self._value, self._generation = self._factory(), _generation

    def peek(self) -> _T | None:
        """This process's value if it made one, else ``None``; never makes one."""
        return self._value if self._generation == _generation else None

    def reset(self) -> None:
        """Drop this process's value (closing it); the next :meth:`get` makes a new one."""
        value = self.peek()
        self._value, self._generation = None, -1
        if value is not None and self._close is not None:
            self._close(value)


class PerThread(Generic[_T]):
    """A value ``factory()`` makes on first use in each thread of each process."""

    def __init__(self, factory: Callable[[], _T]):
        self._factory = factory
        self._local = threading.local()

    def get(self) -> _T:
        """This thread's value, made now if this thread (of this process) has none."""
        local = self._local
        if getattr(local, "generation", -1) != _generation:
            local.value, local.generation = self._factory(), _generation
        return local.value

    def peek(self) -> _T | None:
        """This thread's value if it made one in this process, else ``None``."""
        local = self._local
        return local.value if getattr(local, "generation", -1) == _generation else None

    def reset(self) -> None:
        """Drop this thread's value; the next :meth:`get` makes a new one."""
        self._local.__dict__.clear()
