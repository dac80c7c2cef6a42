"""A bound the client keeps on every round trip of a scalekit connection to PostgreSQL.

The server's ``statement_timeout`` ends a slow statement, but a frozen server (SIGSTOP, a
stalled disk, a paused VM) enforces nothing, and the kernel of a stopped process still
acknowledges what is sent, so TCP keepalives and ``tcp_user_timeout`` see nothing wrong:
libpq would wait forever, and psycopg2 has no read timeout. So each statement, commit and
rollback on a :func:`bounded_connection` is watched by one thread per process: past its
deadline the connection's socket is shut down, libpq fails at once with a connection error,
and the connection is dropped. Inside a request with a deadline
(:func:`scalekit.core.context.remaining`) the bound is the time left when that is shorter.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from scalekit.core.context import remaining
from scalekit.core.process import PerProcess

__all__ = ["bounded_connection"]


class _Watchdog:
    """Deadlines of the round trips in progress in this process, and the thread that ends
    the connection of one that passes its deadline."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._watched: dict[int, tuple[float, int]] = {}  # token: (deadline, socket fd)
        self._tokens = itertools.count()
        self._wake_at: float | None = None  # when the thread wakes unless notified
        threading.Thread(target=self._run, name="scalekit-sql-deadline", daemon=True).start()

    @contextlib.contextmanager
    def watching(self, fd: int, seconds: float) -> Iterator[None]:
        token = next(self._tokens)
        deadline = time.monotonic() + seconds
        with self._changed:
            self._watched[token] = (deadline, fd)
            if self._wake_at is None or deadline < self._wake_at:  # else it wakes in time
                self._changed.notify()
        try:
            yield
        finally:
            with self._changed:  # before the connection can close: its fd is never reused here
                self._watched.pop(token, None)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for token, (deadline, fd) in list(self._watched.items()):
                    if deadline <= now:
                        del self._watched[token]
                        _shut_down(fd)
                soonest = min((deadline for deadline, _ in self._watched.values()), default=None)
                self._wake_at = soonest
                self._changed.wait(None if soonest is None else soonest - now)


def _shut_down(fd: int) -> None:
    """End the connection on socket ``fd`` (its owner, libpq, still closes the fd)."""
    with contextlib.suppress(OSError), socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as dup:
        dup.shutdown(socket.SHUT_RDWR)


_watchdog = PerProcess(_Watchdog)


@functools.cache
def bounded_connection(seconds: float) -> type:
    """psycopg2's ``connection_factory`` for connections whose every statement, commit and
    rollback ends within ``seconds`` (or the current request's :func:`remaining` time, when
    shorter), or fails with ``psycopg2.OperationalError``."""
    import psycopg2.extensions

    def bounded(method: Any) -> Any:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            connection = getattr(self, "connection", self)  # a cursor's, or this connection
            with _watchdog.get().watching(connection.fileno(), min(seconds, remaining())):
                return method(self, *args, **kwargs)

        return call

    class BoundedCursor(psycopg2.extensions.cursor):
        execute = bounded(psycopg2.extensions.cursor.execute)
        executemany = bounded(psycopg2.extensions.cursor.executemany)

    class BoundedConnection(psycopg2.extensions.connection):
        commit = bounded(psycopg2.extensions.connection.commit)
        rollback = bounded(psycopg2.extensions.connection.rollback)

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.cursor_factory = BoundedCursor

    return BoundedConnection
