"""The lean path's connections: one command written and its reply read with no client layers.

redis-py opens each connection (its handshake: AUTH, SELECT, TLS). Then, over TCP and unix
sockets with hiredis installed, a :class:`SocketLink` writes commands and reads replies
straight on the blocking socket, its timeouts kernel socket options (``SO_RCVTIMEO``,
``SO_SNDTIMEO``): a Python socket with a timeout polls before every send and receive, so
this makes two system calls per command instead of four. Over TLS, or without hiredis, a
:class:`Link` lets redis-py do the I/O.

Inside a request with a deadline (:data:`scalekit.core.context.deadline`) a command waits no
longer than the time left (and :data:`LATE`): when that is shorter than the socket timeout,
the timeout is lowered for that one command (and put back after it), and a command with no
time left fails at once, before anything is sent, with :class:`NoTimeLeft` (a
``redis.TimeoutError``; its connection is kept). Outside one, that
costs a context variable read and a comparison per command.

redis-py has no public API for two things this path needs; both are used here and only here:
the socket of a connection it opened (:func:`_socket_of`), and its table that turns an error
reply into the exception redis-py would raise (``NoScriptError``, ``BusyLoadingError``...),
so that a command raises the same exceptions on either path.
"""

from __future__ import annotations

import math
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis
from redis._parsers import BaseParser  # see the module docstring: no public equivalent

try:
    import hiredis
except ImportError:  # the hiredis extra is not installed: redis-py does the I/O
    hiredis = None

from scalekit.core.context import Limit, deadline

if TYPE_CHECKING:
    from scalekit.connect.redis.topology import Node, Topology

__all__ = ["Link", "LinkPool", "NoTimeLeft", "Slots", "SocketLink", "any_lost", "open_link"]

#: Seconds a command blocked at the request's deadline waits past it: the deadline's own
#: interrupt (``DeadlineExceeded``, which a thread sees once the read returns) ends the
#: request, rather than a timeout error its code might take for Redis being down.
LATE = 0.1
_limit_now = deadline.get  # the current request's time limit, or None
_monotonic = time.monotonic


class NoTimeLeft(redis.TimeoutError):
    """A command refused before anything was sent: the request's deadline has passed (or
    came while waiting for a free connection). Its connection is as good as before: it
    stays open for the next command, and no failover follows."""


def open_link(server: Topology | Node) -> Link:
    """A new lean-path link to ``server`` (a topology's server, or a Cluster node),
    connected now on a plain socket with hiredis, on first use otherwise."""
    connection = server.connection()
    if hiredis is None or isinstance(connection, redis.SSLConnection):
        return Link(connection, server.where)
    return SocketLink(connection, server.where)


class Link:
    """One lean-path connection, its I/O done by redis-py (TLS, or no hiredis)."""

    def __init__(self, connection: redis.connection.AbstractConnection, where: str):
        self.connection, self.where = connection, where
        self.redirect: int | None = None  # client id its key invalidations go to
        self.busy = False  # a command of the connector's is running on it
        self.timeout = connection.socket_timeout or 0  # 0: none
        # A command under a deadline whose time left is under ``bound`` waits the time left
        # and LATE instead of the socket's timeout; with none, under any deadline (its
        # time left is finite): a command never waits past it, at the cost of setting the
        # timeout and putting it back (four setsockopt calls over a plain socket).
        self.bound = self.timeout - LATE if self.timeout else math.inf

    def execute(self, args: tuple) -> Any:
        """The reply of the command ``args``; an error reply raised."""
        limit = _limit_now()
        if limit is not None and limit.at - _monotonic() < self.bound:
            return self._timed(self._left(limit), self._roundtrip, args)
        return self._roundtrip(args)

    def pipeline(self, commands: list[tuple], wait: float = 0.0) -> list[Any]:
        """The replies of ``commands``, written at once; an error reply is returned (the
        exception redis-py would raise), not raised. ``wait``: seconds more than the
        socket timeout that the replies may take (a ``WAIT``)."""
        seconds = self.timeout + wait if self.timeout else 0  # 0: none
        limit = _limit_now()
        if limit is not None and (not seconds or limit.at - _monotonic() + LATE < seconds):
            seconds = self._left(limit)
        if seconds == self.timeout:
            return self._replies(commands)
        return self._timed(seconds, self._replies, commands)

    def _left(self, limit: Limit) -> float:
        """The timeout of a command near the request's deadline (the seconds left, and
        :data:`LATE`); :class:`NoTimeLeft` if it has passed."""
        left = limit.at - _monotonic()
        if left <= 0:
            raise NoTimeLeft(
                f"no time left for Redis at {self.where}: the request's deadline has passed"
            )
        return left + LATE

    def _timed(self, seconds: float, run: Any, arg: Any) -> Any:
        """``run(arg)`` with the socket timeout ``seconds``, then the link's own again."""
        self._set_timeout(seconds)
        try:
            return run(arg)
        finally:
            self._restore_timeout()

    def _set_timeout(self, seconds: float) -> None:
        _socket_of(self.connection).settimeout(seconds or None)

    def _restore_timeout(self) -> None:
        """The link's own timeout on its socket again, if it still has one: redis-py drops
        the socket on a timeout or an error, and a restore must not connect again (a
        handshake bounded by the socket timeout, not the deadline; its error would hide
        the command's)."""
        sock = self.connection._sock  # redis-py's, as in _socket_of
        if sock is not None:
            sock.settimeout(self.timeout or None)

    def _roundtrip(self, args: tuple) -> Any:
        self.connection.send_command(*args)
        return self.connection.read_response()

    def _replies(self, commands: list[tuple]) -> list[Any]:
        self.connection.send_packed_command(self.connection.pack_commands(commands))
        replies = []
        for _ in commands:
            try:
                replies.append(self.connection.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies

    def pending(self) -> list[Any]:
        """The messages that have arrived (a subscribed connection), read without waiting.
        Raises ``redis.ConnectionError`` when the connection is closed."""
        messages = []
        while self.connection.can_read(timeout=0):
            messages.append(self.connection.read_response())
        return messages

    def close(self) -> None:
        self.connection.disconnect()


class SocketLink(Link):
    """A connection whose commands go straight over its blocking socket, read by hiredis."""

    def __init__(self, connection: redis.connection.AbstractConnection, where: str):
        super().__init__(connection, where)
        self.sock = _socket_of(connection)
        self.sock.settimeout(None)  # no poll() before each call: the kernel keeps the timeout
        self._set_timeout(self.timeout)
        self.reader = hiredis.Reader(
            protocolError=redis.exceptions.InvalidResponse, replyError=BaseParser.parse_error
        )

    def _roundtrip(self, args: tuple) -> Any:
        sock, reader = self.sock, self.reader
        try:
            sock.sendall(hiredis.pack_command(args))
            reply = reader.gets()
            while reply is False:
                reply = self._more()
        except BlockingIOError:  # EAGAIN: SO_RCVTIMEO or SO_SNDTIMEO ran out
            raise redis.TimeoutError(f"timeout talking to Redis at {self.where}") from None
        except OSError as exc:
            raise redis.ConnectionError(f"Redis at {self.where}: {exc}") from None
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    def _replies(self, commands: list[tuple]) -> list[Any]:
        replies = []
        try:
            self.sock.sendall(b"".join(hiredis.pack_command(args) for args in commands))
            while len(replies) < len(commands):
                reply = self.reader.gets()
                replies.append(self._more() if reply is False else reply)
        except BlockingIOError:
            raise redis.TimeoutError(f"timeout talking to Redis at {self.where}") from None
        except OSError as exc:
            raise redis.ConnectionError(f"Redis at {self.where}: {exc}") from None
        return replies

    def _restore_timeout(self) -> None:
        self._set_timeout(self.timeout)

    def _set_timeout(self, seconds: float) -> None:
        """The socket's receive and send timeouts (``SO_RCVTIMEO``, ``SO_SNDTIMEO``; 0: none)."""
        whole = int(seconds)
        micro = int((seconds - whole) * 1e6)
        limit = struct.pack("ll", whole, micro if whole or micro or not seconds else 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)

    def _more(self) -> Any:
        """Read from the socket until a whole reply has arrived; that reply."""
        reply = False
        while reply is False:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise redis.ConnectionError(f"Redis at {self.where} closed the connection")
            self.reader.feed(chunk)
            reply = self.reader.gets()
        return reply

    def pending(self) -> list[Any]:
        while True:
            try:
                chunk = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                raise redis.ConnectionError(f"Redis at {self.where}: {exc}") from None
            if not chunk:
                raise redis.ConnectionError(f"Redis at {self.where} closed the connection")
            self.reader.feed(chunk)
        messages = []
        while (message := self.reader.gets()) is not False:
            messages.append(message)
        return messages


def any_lost(links: Iterable[Link]) -> bool:
    """Whether one of ``links`` is closed, or has something to read while no command waits
    for its reply: its server closed it (a kill, an idle timeout; under TLS the close is a
    record too). One look at all their sockets, one system call, that reads nothing."""
    poll = select.poll()
    for link in links:
        sock = getattr(link.connection, "_sock", None)  # redis-py's, as in _socket_of
        fd = -1 if sock is None else sock.fileno()
        if fd == -1:
            return True
        if not link.busy:
            poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))


def _socket_of(connection: redis.connection.AbstractConnection) -> socket.socket:
    """``connection`` connected by redis-py (AUTH, SELECT, CLIENT SETINFO...), and its
    socket: redis-py keeps it in a private attribute and offers no accessor."""
    connection.connect()
    return connection._sock


class Slots:
    """``size`` slots, each held by one command at a time (``max_connections``).

    :meth:`take` marks the caller's ``taken`` in the same step as it takes a slot, with no
    call or loop between the two where an asynchronous exception (the deadline's
    ``PyThreadState_SetAsyncExc``) could land: the caller's ``finally`` gives back exactly
    what was taken. A semaphore's ``acquire`` returns its answer through a call, and an
    exception landing as it returns would lose the slot for good."""

    __slots__ = ("_changed", "free")

    def __init__(self, size: int):
        self.free = size
        self._changed = threading.Condition(threading.Lock())

    def take(self, timeout: float, taken: list[bool]) -> bool:
        """Take a slot, waiting up to ``timeout`` seconds (0: only a look) for one to be
        free; ``taken[0]`` is set as it is taken. Whether one was."""
        with self._changed:
            if not self.free:
                until = _monotonic() + timeout
                while not self.free:
                    left = until - _monotonic()
                    if left <= 0:
                        return False
                    self._changed.wait(left)
            self.free -= 1
            taken[0] = True
        return True

    def give(self) -> None:
        """Give back a slot taken."""
        with self._changed:
            self.free += 1
            self._changed.notify()


class LinkPool:
    """One process's idle links, a LIFO taken and given back without a lock, and with
    ``max_connections`` the slots that bound how many are in use at once."""

    __slots__ = ("idle", "slots")

    def __init__(self, max_connections: int | None):
        self.idle: deque[Link] = deque()
        self.slots = Slots(max_connections) if max_connections else None

    def close(self) -> None:
        """Close every idle link (one in use now goes with this pool when given back)."""
        while True:
            try:
                self.idle.pop().close()
            except IndexError:
                return
