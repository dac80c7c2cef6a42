"""The deadline's watchdog: one thread per process that interrupts the requests that run
past their deadline, and answers for those that stay stuck.

A request registers with one set insert and no wake-up: the watchdog never sleeps longer
than the shortest deadline there is (:func:`shorten`), so it looks at every new request
before that request can be due. At the deadline it takes the stack of the request's thread
(``sys._current_frames()``) and interrupts it with :class:`DeadlineExceeded`: in the main
thread (gunicorn's sync workers) by ``SIGALRM``, which also breaks a ``time.sleep`` or a
blocking read; in other threads (gthread workers) by an asynchronous exception, which the
interpreter raises at the thread's next bytecode, so code blocked in C (a sleep, a socket
read) sees it only once that call returns. An overtime thread then writes the ticket of the
stack (through ``environ[TICKET_CAPTURE_KEY]``, else an ERROR log) and, past the grace,
interrupts once more; if the request has still not answered, it sends the 503 page itself on
gunicorn's socket (``environ["gunicorn.socket"]``) and shuts the connection down. Who
answers is claimed once, under a lock, so the thread's later answer is dropped. The
exception is delivered only while the app's code runs (its call, a step of its body), never
into the server's code.
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType, TracebackType
from typing import Any, Protocol

from scalekit.core.context import Limit
from scalekit.core.process import PerProcess
from scalekit.wsgi.environ import REQUEST_ID_KEY, TICKET_CAPTURE_KEY
from scalekit.wsgi.http import request_line
from scalekit.wsgi.pages import NO_STORE, internal_error

__all__ = [
    "APP",
    "SETTLE",
    "WATCHDOG",
    "DeadlineExceeded",
    "Layer",
    "Request",
    "Watchdog",
    "cut",
    "page_of",
    "shorten",
    "watchdog",
    "where",
    "write_ticket",
]

log = logging.getLogger("scalekit.frontend")

#: Seconds a request interrupted twice has to unwind before its 503 is sent for it.
SETTLE = 0.1
APP, WATCHDOG = "app", "watchdog"  # who answers the client
_shortest = math.inf  # the shortest deadline of any layer in this process, in seconds


class DeadlineExceeded(BaseException):
    """Raised in a request's thread when its deadline passes. Like App Engine's
    ``DeadlineExceededError`` it is not an ``Exception``: ``except Exception`` does not
    swallow it; ``except DeadlineExceeded`` may, and then has ``remaining()`` seconds of
    grace to answer."""

    def __init__(self, *args: object):
        super().__init__(*(args or ("the request ran past its deadline",)))


class Layer(Protocol):
    """What the watchdog needs of the deadline layer a request runs under."""

    seconds: float
    grace: float
    codes: frozenset[CodeType]  # the layer's own frames: a ticket's stack starts below them


class Request(Limit):
    """One request in flight: its thread, its environ, and who answers it."""

    __slots__ = ("answer", "done", "due", "environ", "finished", "inside", "layer", "pending",
                 "start_response", "thread", "ticket", "ticketed", "write")  # fmt: skip

    def __init__(self, at: float, thread: int, environ: dict, layer: Layer,
                 start_response: Callable) -> None:  # fmt: skip
        self.at = self.due = at  # due: when the watchdog acts on it next (inf: not its job)
        self.thread, self.environ, self.layer = thread, environ, layer
        self.start_response = start_response  # the server's
        self.inside = True  # the app's code is running (its call, a step of its body)
        self.pending = self.done = False  # pending: interrupted, not yet seen delivered
        self.answer: str | None = None  # APP or WATCHDOG, claimed under the watchdog's lock
        self.ticket: str | None = None
        self.ticketed: threading.Event | None = None  # set once the ticket is written
        self.finished: threading.Event | None = None  # set when the request ends

    def start(self, status: str, headers: list, exc_info: Any = None) -> Callable:
        """The ``start_response`` the app is given: its ``write()`` claims the answer."""
        self.write = self.start_response(status, headers, exc_info)
        return self.written

    def written(self, data: bytes) -> None:
        """WSGI's ``write()``: the response starts here, unless the watchdog answered it."""
        if self.answer is None:
            watchdog.get().claim(self)
        if self.answer == APP:
            self.write(data)


class Watchdog:
    """This process's requests in flight, and the thread that interrupts the late ones."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: set[Request] = set()
        self.main = threading.main_thread().ident
        self.alarm = False  # SIGALRM looked at (first request on the main thread)
        self.wake = threading.Event()  # set when a shorter deadline appears
        threading.Thread(target=self._run, name="scalekit-deadline", daemon=True).start()

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            soonest = now + _shortest  # no request registered from now on is due sooner
            for request in self.requests.copy():
                if request.due <= now:
                    try:
                        self._expire(request)
                    except Exception:  # the watchdog must go on watching the others
                        log.exception("%s: its deadline could not be enforced", where(request))
                else:
                    soonest = min(soonest, request.due)
            self.wake.wait(min(max(soonest - now, 0.001), 3600.0))
            self.wake.clear()

    def _expire(self, request: Request) -> None:
        """The deadline passed: the stack now, the interrupt, then the overtime thread."""
        request.due = math.inf
        with self.lock:  # (the request cannot end meanwhile: its _end sets finished)
            if request.done:  # ended since the copy of the requests was taken
                return
            request.ticketed, request.finished = threading.Event(), threading.Event()
            frame = sys._current_frames().get(request.thread)  # still the request's stack
        error = DeadlineExceeded(
            f"the request ran past its deadline of {request.layer.seconds:g} s"
        ).with_traceback(None if frame is None else _traceback(frame, request.layer.codes))
        request.at = time.monotonic() + request.layer.grace
        self.interrupt(request)
        _thread.start_new_thread(self._overtime, (request, error))  # no wait for it to start

    def _overtime(self, request: Request, error: DeadlineExceeded) -> None:
        """Write the ticket; past the grace interrupt again, and answer for a stuck request."""
        request.ticket = write_ticket(error, request.environ)
        request.ticketed.set()
        if request.finished.wait(max(request.at - time.monotonic(), 0.0)):
            return
        self.interrupt(request)
        if request.finished.wait(SETTLE):
            return
        environ = request.environ
        if "gunicorn.socket" not in environ:  # it answers 503 itself when it returns
            log.error("%s is stuck past its deadline and grace; no socket to answer it on",
                      where(request))  # fmt: skip
            return
        with self.lock:
            if request.done or (request.answer == APP and not request.inside):
                return  # the server sends its answer; a next step of its body is cut short
            claimed = request.answer is None
            request.answer = request.answer or WATCHDOG
        _answer_for(request, claimed)

    def enter(self, request: Request) -> bool:
        """The thread runs the app's code again (a step of its body); whether it is late."""
        with self.lock:
            request.inside = True
            return request.pending

    def interrupt(self, request: Request) -> None:
        """Raise :class:`DeadlineExceeded` in the request's thread if the app's code runs
        there now; else its next step raises it (see :meth:`enter`)."""
        with self.lock:
            if request.done:
                return
            request.pending = True
            if not request.inside:
                return
            if self._by_signal(request):
                signal.pthread_kill(request.thread, signal.SIGALRM)
            else:
                _async_raise(request.thread, DeadlineExceeded)

    def leave(self, request: Request, claim: bool, done: bool) -> bool:
        """The thread leaves the app's code: no interrupt reaches it after this. ``claim``:
        it answers now (false if the watchdog has); ``done``: the request ends."""
        while True:
            try:
                with self.lock:
                    request.inside = False
                    if request.pending:  # one may still wait in the thread: not any more
                        request.pending = False
                        if not self._by_signal(request):
                            _withdraw()
                    if claim and request.answer is None:
                        request.answer = APP
                    if done:
                        self._end(request)
                return not claim or request.answer == APP
            except DeadlineExceeded:
                continue  # delivered just now, in here: seen, so gone

    def claim(self, request: Request) -> bool:
        """The thread answers the 503 page itself, unless the watchdog has (or the
        response had started)."""
        with self.lock:
            claimed = request.answer is None
            request.answer = request.answer or APP
        return claimed

    def install_alarm(self) -> None:
        """From the main thread, on its first request: our SIGALRM handler, unless the app
        has one of its own (then interrupts reach the main thread as in other threads)."""
        current = signal.getsignal(signal.SIGALRM)
        if current in (signal.SIG_DFL, signal.SIG_IGN, None, _alarm):
            signal.signal(signal.SIGALRM, _alarm)
        else:
            log.warning("SIGALRM has a handler already: a deadline cannot break a blocking call")
        self.alarm = True

    def _by_signal(self, request: Request) -> bool:
        """Whether an interrupt reaches ``request`` by SIGALRM (else: asynchronously)."""
        return (
            request.thread == self.main
            and self.alarm
            and signal.getsignal(signal.SIGALRM) is _alarm
        )

    def _end(self, request: Request) -> None:
        request.done = True
        self.requests.discard(request)
        if request.finished is not None:
            request.finished.set()


#: This process's watchdog (made, and its thread started, at its first request).
watchdog: PerProcess[Watchdog] = PerProcess(Watchdog)


def shorten(seconds: float) -> None:
    """A deadline of ``seconds`` exists now: the watchdog never sleeps longer."""
    global _shortest
    if seconds < _shortest:
        _shortest = seconds
        running = watchdog.peek()
        if running is not None:
            running.wake.set()


def _alarm(signum: int, frame: FrameType | None) -> None:
    """SIGALRM in the main thread: raise there if the watchdog interrupted its request."""
    for request in watchdog.get().requests.copy():
        if request.thread == threading.get_ident() and request.pending and request.inside:
            request.pending = False
            raise DeadlineExceeded


def _async_raise(thread: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in ``thread`` at its next bytecode (None: cancel one not raised yet)."""
    exc_object = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), exc_object)


class _Withdrawn(BaseException):
    """Raised in place of an asynchronous exception withdrawn (see :func:`_withdraw`)."""


def _withdraw() -> None:
    """Withdraw an asynchronous exception not raised yet in this thread. Withdrawing it by
    setting NULL leaves the interpreter's flag of a pending one set (CPython clears it only
    as a thread raises one): every thread then takes the slow path at each check, and one
    with a trace function set loops there forever. So it is replaced by one raised and
    caught here."""
    try:
        _async_raise(threading.get_ident(), _Withdrawn)
        while True:
            _tick()
    except _Withdrawn:
        pass


def _tick() -> None:
    """A call: where the interpreter raises a pending asynchronous exception."""


def _traceback(frame: FrameType, stops: frozenset[CodeType]) -> TracebackType | None:
    """A traceback of ``frame``'s stack as it is now, down from the deadline layer."""
    tb = None
    while frame is not None and frame.f_code not in stops:
        tb = TracebackType(tb, frame, frame.f_lasti, frame.f_lineno)
        frame = frame.f_back
    return tb


def where(request: Request) -> str:
    """The request's method and path for a log line (a client chose the path: escaped)."""
    return request_line(request.environ)


def write_ticket(exc: BaseException, environ: dict) -> str | None:
    """The ticket of ``exc`` through the ticket middleware's hook, else an ERROR log."""
    capture = environ.get(TICKET_CAPTURE_KEY)
    place = request_line(environ)
    if capture is None:
        log.error("%s: deadline exceeded (no ticket middleware)", place, exc_info=exc)
        return None
    try:
        return capture(exc, environ, environ.get(REQUEST_ID_KEY) or "-")
    except Exception:
        log.exception("%s: deadline exceeded, and its ticket failed", place)
        return None


def page_of(request: Request) -> tuple[str, bytes, list[tuple[str, str]]]:
    """The 503 page's type, body and headers: the request id and ticket id, no details."""
    environ, ticket = request.environ, request.ticket
    request_id = environ.get(REQUEST_ID_KEY)
    if not (isinstance(request_id, str) and request_id.isascii() and request_id.isprintable()):
        request_id = None
    content_type, body = internal_error(environ.get("HTTP_ACCEPT", ""), ticket, request_id, "503")
    headers = [NO_STORE]
    headers += [("X-Request-ID", request_id)] if request_id else []
    headers += [("X-Ticket-ID", ticket)] if ticket else []
    return content_type, body, headers


def _answer_for(request: Request, claimed: bool) -> None:
    """Answer a stuck request on gunicorn's socket (the 503 page if ``claimed``, else its
    response started: cut short), and shut the connection down."""
    environ = request.environ
    if claimed:
        content_type, body, headers = page_of(request)
        framing = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                   ("Connection", "close")]  # fmt: skip
        lines = ["HTTP/1.1 503 Service Unavailable\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in [*framing, *headers]]
        head = "".join(lines).encode("latin-1") + b"\r\n"
        data = head if environ.get("REQUEST_METHOD") == "HEAD" else head + body
        with contextlib.suppress(OSError):
            environ["gunicorn.socket"].send(data, socket.MSG_DONTWAIT)
    cut(environ)
    log.error("%s is stuck past its deadline and grace: %s (ticket %s)", where(request),
              "answered 503" if claimed else "response cut short", request.ticket)  # fmt: skip


def cut(environ: dict) -> None:
    """End the request's connection now (nothing more can reach the client on it); with
    no socket to end, raise for the server to abort it (PEP 3333)."""
    sock: Any = environ.get("gunicorn.socket")
    if sock is None:
        raise ConnectionAbortedError("the response is cut short: it ran past its deadline")
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
