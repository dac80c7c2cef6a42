"""One DAL per thread of each process: what a piece that owns its DAL keeps.

pydal's connections are thread-local, and a forked child must not use (or close) the
connection of its parent. :class:`ThreadDAL` holds each thread's DAL in a
:class:`~scalekit.core.process.PerThread`, so a child opens its own on first use, told by the
fork generation without a ``getpid`` system call. :meth:`ThreadDAL.transaction` runs a block
in one transaction of the thread's DAL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pydal import DAL

from scalekit.connect.sql.dal import begin_immediate, close_quietly
from scalekit.core.process import PerThread

_T = TypeVar("_T")


class _Opened:
    """A thread's DAL, what ``prepare`` made of it, and the :class:`ThreadDAL` epoch it
    belongs to (-1: none yet)."""

    __slots__ = ("db", "epoch", "value")

    def __init__(self) -> None:
        self.db: DAL | None = None
        self.value: Any = None
        self.epoch = -1


class ThreadDAL(Generic[_T]):
    """A DAL per thread of each process, opened on first use by ``connect()`` and readied by
    ``prepare(db)`` (defining the caller's tables); :meth:`get` answers what ``prepare``
    returned. A DAL whose ``prepare`` fails is closed. A forked child opens its own and
    never touches its parent's."""

    def __init__(self, connect: Callable[[], DAL], prepare: Callable[[DAL], _T]):
        self._connect, self._prepare = connect, prepare
        self._opened: PerThread[_Opened] = PerThread(_Opened)
        self._epoch = 0

    def get(self) -> _T:
        """This thread's ``prepare(db)``, opening its DAL now if it has none."""
        opened = self._opened.get()
        if opened.epoch != self._epoch:
            self._reopen(opened)
        return opened.value

    def _reopen(self, opened: _Opened) -> None:
        epoch = self._epoch
        if opened.db is not None:  # closed by close() in another thread: ours ends now
            self._forget(opened)
        db = self._connect()
        try:
            value = self._prepare(db)
        except BaseException:
            close_quietly(db)
            raise
        opened.db, opened.value, opened.epoch = db, value, epoch

    @contextlib.contextmanager
    def transaction(
        self, unavailable: Callable[[BaseException], BaseException], *, write: bool = False
    ) -> Iterator[_T]:
        """This thread's ``prepare(db)`` in one transaction (on SQLite a ``write`` one
        takes the write lock first: :func:`begin_immediate`), committed after the block,
        rolled back on any exception. A driver error closes this thread's DAL (its
        connection may be gone: the next use opens one) and is raised as
        ``unavailable(exc)``."""
        value = self.get()
        db = self._opened.get().db
        try:
            if write and db._adapter.dbengine == "sqlite":
                begin_immediate(db)
            yield value
            db.commit()
        except db._adapter.driver.Error as exc:
            self.drop()
            raise unavailable(exc) from exc
        except BaseException:
            try:
                db.rollback()
            except Exception:  # noqa: BLE001 - the connection is gone: reopen on next use
                self.drop()
            raise

    def drop(self) -> None:
        """Close this thread's DAL (say, after its connection failed); the next :meth:`get`
        opens a new one."""
        opened = self._opened.peek()
        if opened is not None and opened.db is not None:
            self._forget(opened)

    def close(self) -> None:
        """Close this thread's DAL now, and every other thread's on its next use (only its
        own thread may close a pydal connection)."""
        self._epoch += 1
        self.drop()

    @staticmethod
    def _forget(opened: _Opened) -> None:
        db = opened.db
        opened.db, opened.value, opened.epoch = None, None, -1
        close_quietly(db)
