"""The deadline: a request that runs too long is interrupted, may answer within a grace, and
otherwise gets a 503 page and a ticket holding the stack where it was stuck.

One watchdog thread per process knows the requests in flight. A request registers with one
set insert and no wake-up: the watchdog never sleeps longer than the shortest deadline
there is, so it looks at every new request before that request can be due. At the deadline
it takes the stack of the request's thread (``sys._current_frames()``) and interrupts it
with :class:`DeadlineExceeded`: in the main thread (gunicorn's sync workers) by ``SIGALRM``,
which also breaks a ``time.sleep`` or a blocking read; in other threads (gthread workers) by
an asynchronous exception, which the interpreter raises at the thread's next bytecode, so
code blocked in C (a sleep, a socket read) sees it only once that call returns. An overtime
thread then writes the ticket (through ``environ[TICKET_CAPTURE_KEY]``, else an ERROR log)
and, past the grace, interrupts once more; if the request has still not answered, it sends
the 503 page itself on gunicorn's socket (``environ["gunicorn.socket"]``) and shuts the
connection down. Who answers is claimed once, under a lock: the thread's later answer is
dropped. The exception is delivered only while the app's code runs (its call, a step of its
body), never into the server's code.

Under gunicorn's sync worker the arbiter kills a worker whose request outlasts ``timeout``
(default 30 s, with no traceback): at the first request of each worker the deadline is cut,
with one WARNING, to end in time. A gthread worker's timeout does not bound requests.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from types import FrameType, TracebackType
from typing import Any

from scalekit.core import context
from scalekit.core.context import Limit, remaining
from scalekit.core.errors import ConfigError
from scalekit.core.process import PerProcess
from scalekit.wsgi.environ import REQUEST_ID_KEY, TICKET_CAPTURE_KEY
from scalekit.wsgi.pages import NO_STORE, negotiated, page
from scalekit.wsgi.response import close_body

__all__ = ["Deadline", "DeadlineExceeded", "remaining"]

log = logging.getLogger("scalekit.frontend")

#: Seconds a request interrupted twice has to unwind before its 503 is sent for it.
SETTLE = 0.1
#: Seconds kept between the end of a deadline's grace and the server's worker timeout: the
#: request's headers are read, and its answer written, before and after the app runs.
MARGIN = 1.0
_APP, _WATCHDOG = "app", "watchdog"  # who answers the client
_shortest = math.inf  # the shortest deadline of any Deadline in this process, in seconds


class DeadlineExceeded(BaseException):
    """Raised in a request's thread when its deadline passes. Like App Engine's
    ``DeadlineExceededError`` it is not an ``Exception``: ``except Exception`` does not
    swallow it; ``except DeadlineExceeded`` may, and then has :func:`remaining` seconds of
    grace to answer."""

    def __init__(self, *args: object):
        super().__init__(*(args or ("the request ran past its deadline",)))


class _Request(Limit):
    """One request in flight: its thread, its environ, and who answers it."""

    __slots__ = ("answer", "done", "due", "environ", "finished", "inside", "layer", "pending",
                 "thread", "ticket", "ticketed")  # fmt: skip

    def __init__(self, at: float, thread: int, environ: dict, layer: Deadline):
        self.at = self.due = at  # due: when the watchdog acts on it next (inf: not its job)
        self.thread, self.environ, self.layer = thread, environ, layer
        self.inside = True  # the app's code is running (its call, a step of its body)
        self.pending = False  # interrupted; not yet seen to be delivered
        self.done = False
        self.answer: str | None = None  # _APP or _WATCHDOG, claimed under the watchdog's lock
        self.ticket: str | None = None
        self.ticketed: threading.Event | None = None  # set once the ticket is written
        self.finished: threading.Event | None = None  # set when the request ends


class _Watchdog:
    """This process's requests in flight, and the thread that interrupts the late ones."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: set[_Request] = set()
        self.main = threading.main_thread().ident
        self.alarm = False  # our SIGALRM handler is installed (first request on the main thread)
        self.wake = threading.Event()  # set when a shorter deadline appears
        threading.Thread(target=self._run, name="scalekit-deadline", daemon=True).start()

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            soonest = now + _shortest  # no request registered from now on is due sooner
            for request in self.requests.copy():
                if request.due <= now:
                    self._expire(request)
                else:
                    soonest = min(soonest, request.due)
            self.wake.wait(min(max(soonest - now, 0.001), 3600.0))
            self.wake.clear()

    def _expire(self, request: _Request) -> None:
        """The deadline passed: the stack now, the interrupt, then the overtime thread."""
        request.due = math.inf
        frame = sys._current_frames().get(request.thread)
        error = DeadlineExceeded(
            f"the request ran past its deadline of {request.layer.seconds:g} s"
        ).with_traceback(None if frame is None else _traceback(frame))
        request.ticketed, request.finished = threading.Event(), threading.Event()
        request.at = time.monotonic() + request.layer.grace
        self.interrupt(request)
        overtime = partial(self._overtime, request, error)
        threading.Thread(target=overtime, name="scalekit-deadline-overtime", daemon=True).start()

    def _overtime(self, request: _Request, error: DeadlineExceeded) -> None:
        """Write the ticket; past the grace interrupt again, and answer for a stuck request."""
        request.ticket = _write_ticket(error, request.environ)
        request.ticketed.set()
        if request.finished.wait(max(request.at - time.monotonic(), 0.0)):
            return
        self.interrupt(request)
        if request.finished.wait(SETTLE):
            return
        environ = request.environ
        if "gunicorn.socket" not in environ:  # it answers 503 itself when it returns
            log.error("%s %s is stuck past its deadline and grace; no socket to answer it on",
                      environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))  # fmt: skip
            return
        with self.lock:
            if request.done or (request.answer == _APP and not request.inside):
                return  # the server sends its answer; a next step of its body is cut short
            claimed = request.answer is None
            request.answer = request.answer or _WATCHDOG
        _answer_for(request, claimed)

    def enter(self, request: _Request) -> bool:
        """The thread runs the app's code again (a step of its body); whether it is late."""
        with self.lock:
            request.inside = True
            return request.pending

    def by_signal(self, request: _Request) -> bool:
        """Whether an interrupt reaches ``request`` by SIGALRM (else: asynchronously)."""
        return (
            request.thread == self.main
            and self.alarm
            and signal.getsignal(signal.SIGALRM) is _alarm
        )

    def interrupt(self, request: _Request) -> None:
        """Raise :class:`DeadlineExceeded` in the request's thread if the app's code runs
        there now; else its next step raises it (see :meth:`Deadline._step`)."""
        with self.lock:
            if request.done:
                return
            request.pending = True
            if not request.inside:
                return
            if self.by_signal(request):
                signal.pthread_kill(request.thread, signal.SIGALRM)
            else:
                _async_raise(request.thread, DeadlineExceeded)

    def leave(self, request: _Request, claim: bool, done: bool) -> bool:
        """The thread leaves the app's code: no interrupt reaches it after this. ``claim``:
        it answers now (false if the watchdog has); ``done``: the request ends."""
        while True:
            try:
                with self.lock:
                    request.inside = False
                    if request.pending:  # one may still wait in the thread: not any more
                        request.pending = False
                        if not self.by_signal(request):
                            _async_raise(request.thread, None)
                    if claim and request.answer is None:
                        request.answer = _APP
                    if done:
                        self._end(request)
                return not claim or request.answer == _APP
            except DeadlineExceeded:
                continue  # delivered just now, in here: seen, so gone

    def _end(self, request: _Request) -> None:
        request.done = True
        self.requests.discard(request)
        if request.finished is not None:
            request.finished.set()


_watchdog: PerProcess[_Watchdog] = PerProcess(_Watchdog)


def _alarm(signum: int, frame: FrameType | None) -> None:
    """SIGALRM in the main thread: raise there if the watchdog interrupted its request."""
    for request in _watchdog.get().requests.copy():
        if request.thread == threading.get_ident() and request.pending and request.inside:
            request.pending = False
            raise DeadlineExceeded


def _async_raise(thread: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in ``thread`` at its next bytecode (None: cancel one not raised yet)."""
    exc_object = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), exc_object)


class Deadline:
    """``app`` with a deadline of ``seconds`` per request (the call and its body's
    iteration) and ``grace`` seconds to answer once :class:`DeadlineExceeded` is raised in
    it; a stuck request gets a 503 page. ``server_timeout``: the server's own limit on a
    request, which the deadline and its grace must end before (:class:`ConfigError`
    otherwise); under gunicorn's sync worker it is found at the first request."""

    def __init__(self, app: Callable, seconds: float = 60.0, grace: float = 1.0,
                 server_timeout: float | None = None):  # fmt: skip
        if not seconds > 0 or not grace >= 0:
            raise ConfigError(f"deadline {seconds!r} s, grace {grace!r} s: both must be positive")
        if server_timeout is not None and seconds + grace + SETTLE + MARGIN > server_timeout:
            raise ConfigError(
                f"a deadline of {seconds:g} s with {grace:g} s of grace does not end "
                f"{MARGIN:g} s before the server's timeout of {server_timeout:g} s: lower "
                "the deadline or raise the server's timeout"
            )
        self.app, self.seconds, self.grace = app, float(seconds), float(grace)
        self._fitted = PerProcess(self._fit)
        _shorten(self.seconds)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        watchdog = _watchdog.get()
        self._fitted.get()
        outer = context.deadline.get()
        at = time.monotonic() + self.seconds
        thread = threading.get_ident()
        request = _Request(at if outer is None else min(at, outer.at), thread, environ, self)
        if thread == watchdog.main and not watchdog.alarm:
            _install_alarm(watchdog)
        token = context.deadline.set(request)
        watchdog.requests.add(request)
        try:
            body = self.app(environ, start_response)
        except DeadlineExceeded as exc:
            watchdog.leave(request, claim=False, done=False)
            return self._ended(self._exceeded(request, exc, start_response), request, token)
        except BaseException:
            watchdog.leave(request, claim=False, done=True)
            context.reset(context.deadline, token)
            raise
        if type(body) is list:  # a finished answer: the request is over
            if watchdog.leave(request, claim=True, done=True):
                context.reset(context.deadline, token)
                return body
            return self._ended(self._dropped(request, start_response), request, token)
        watchdog.leave(request, claim=False, done=False)
        return self._ended(self._steps(request, body, start_response), request, token)

    def _steps(self, request: _Request, body: Iterable[bytes], start_response: Callable
               ) -> Iterator[bytes]:  # fmt: skip
        """The app's body, each step of it under the deadline; the first step that ends
        claims the answer."""
        watchdog = _watchdog.get()
        try:
            chunks = iter(body)
            while True:
                late = watchdog.enter(request)
                try:
                    if late:
                        raise DeadlineExceeded
                    chunk = next(chunks)
                    answering = watchdog.leave(request, claim=True, done=False)
                except StopIteration:
                    if not watchdog.leave(request, claim=True, done=False):
                        yield from self._dropped(request, start_response)
                    return
                except DeadlineExceeded as exc:
                    watchdog.leave(request, claim=False, done=False)
                    yield from self._exceeded(request, exc, start_response)
                    return
                if not answering:
                    yield from self._dropped(request, start_response)
                    return
                yield chunk
        finally:
            close_body(body)

    def _exceeded(self, request: _Request, exc: DeadlineExceeded, start_response: Callable
                  ) -> Iterable[bytes]:  # fmt: skip
        """:class:`DeadlineExceeded` reached this layer: the 503 page if nobody answered."""
        if request.ticketed is None:  # raised by the app itself, not by the watchdog
            request.ticket = _write_ticket(exc, request.environ)
        else:
            request.ticketed.wait(max(request.at - time.monotonic(), 0.0) + SETTLE)
        with _watchdog.get().lock:
            claimed = request.answer is None
            request.answer = request.answer or _APP
        if not claimed:
            return self._dropped(request, start_response)
        log.error("%s %s: deadline exceeded, answered 503 (ticket %s)",
                  request.environ.get("REQUEST_METHOD"), request.environ.get("PATH_INFO"),
                  request.ticket)  # fmt: skip
        content_type, body, headers = _page(request)
        answer = page("503 Service Unavailable", content_type, body, *headers)
        return answer.send(start_response, (DeadlineExceeded, exc, exc.__traceback__))

    def _dropped(self, request: _Request, start_response: Callable) -> list[bytes]:
        """Nothing more from a late request: the watchdog answered it on the socket (the
        server is told the same 503; its write fails on the closed connection), or its
        response had started and is cut short."""
        if request.answer == _WATCHDOG:
            content_type, body, headers = _page(request)
            error = DeadlineExceeded()
            page("503 Service Unavailable", content_type, body, *headers).send(
                start_response, (DeadlineExceeded, error, None)
            )
        else:
            _cut(request.environ)
        return []

    def _ended(self, body: Iterable[bytes], request: _Request, token: Any) -> Iterator[bytes]:
        """``body``; the request ends with it (the context variable reset, unwatched)."""
        try:
            yield from body
        finally:
            close_body(body)
            _watchdog.get().leave(request, claim=False, done=True)
            context.reset(context.deadline, token)

    def _fit(self) -> bool:
        """Cut the deadline to end before a gunicorn sync worker's timeout (this process's
        worker, found on the stack of its first request)."""
        timeout = _sync_worker_timeout(sys._getframe())
        longest = None if timeout is None else timeout - self.grace - SETTLE - MARGIN
        if longest is not None and self.seconds > longest:
            cut = max(longest, timeout / 4)
            log.warning(
                "deadline of %g s + %g s of grace cut to %g s: gunicorn's sync worker kills "
                "a request after its timeout of %g s (raise --timeout to keep it)",
                self.seconds, self.grace, cut, timeout,
            )  # fmt: skip
            self.seconds = cut
            _shorten(cut)
        return True


def _shorten(seconds: float) -> None:
    """A deadline of ``seconds`` exists now: the watchdog never sleeps longer."""
    global _shortest
    if seconds < _shortest:
        _shortest = seconds
        watchdog = _watchdog.peek()
        if watchdog is not None:
            watchdog.wake.set()


def _sync_worker_timeout(frame: FrameType | None) -> float | None:
    """The timeout of the gunicorn sync worker serving this request on this stack, if any
    (its ``cfg.timeout``: the worker's own ``timeout`` is half of it)."""
    sync = sys.modules.get("gunicorn.workers.sync")
    if sync is None:
        return None
    code = sync.SyncWorker.handle_request.__code__
    while frame is not None:
        if frame.f_code is code:
            timeout = frame.f_locals["self"].cfg.timeout
            return float(timeout) if timeout else None
        frame = frame.f_back
    return None


def _install_alarm(watchdog: _Watchdog) -> None:
    """Our SIGALRM handler, from the main thread, unless the app has its own."""
    current = signal.getsignal(signal.SIGALRM)
    if current in (signal.SIG_DFL, signal.SIG_IGN, None, _alarm):
        signal.signal(signal.SIGALRM, _alarm)
    else:
        log.warning("SIGALRM has a handler already: a deadline cannot break a blocking call")
    watchdog.alarm = True


def _traceback(frame: FrameType) -> TracebackType | None:
    """A traceback of ``frame``'s stack as it is now, down from the app's call."""
    stops = (Deadline.__call__.__code__, Deadline._steps.__code__)
    tb = None
    while frame is not None and frame.f_code not in stops:
        tb = TracebackType(tb, frame, frame.f_lasti, frame.f_lineno)
        frame = frame.f_back
    return tb


def _write_ticket(exc: BaseException, environ: dict) -> str | None:
    """The ticket of ``exc`` through the ticket middleware's hook, else an ERROR log."""
    capture = environ.get(TICKET_CAPTURE_KEY)
    where = f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
    if capture is None:
        log.error("%s: deadline exceeded (no ticket middleware)", where, exc_info=exc)
        return None
    try:
        return capture(exc, environ, environ.get(REQUEST_ID_KEY) or "-")
    except Exception:
        log.exception("%s: deadline exceeded, and its ticket failed", where)
        return None


def _page(request: _Request) -> tuple[str, bytes, list[tuple[str, str]]]:
    """The 503 page's type, body and headers: the request id and ticket id, no details."""
    environ, ticket = request.environ, request.ticket
    request_id = environ.get(REQUEST_ID_KEY)
    document = {"error": "service unavailable", "request_id": request_id, "ticket": ticket}
    content_type, body = negotiated(environ.get("HTTP_ACCEPT", ""), document, lambda: _html(
        request_id, ticket))  # fmt: skip
    headers = [NO_STORE, ("Connection", "close")]
    headers += [("X-Request-ID", request_id)] if request_id else []
    headers += [("X-Ticket-ID", ticket)] if ticket else []
    return content_type, body, headers


def _html(request_id: str | None, ticket: str | None) -> str:
    named = (("Request", request_id), ("Ticket", ticket))
    ids = "".join(f"<p>{name} <code>{value}</code></p>" for name, value in named if value)
    return (
        "<!doctype html><meta charset=utf-8><title>503 Service Unavailable</title>"
        "<h1>Service unavailable</h1><p>The server took too long to answer this request. "
        f"Please try again in a moment.</p>{ids}\n"
    )


def _answer_for(request: _Request, claimed: bool) -> None:
    """Answer a stuck request on gunicorn's socket (the 503 page if ``claimed``, else its
    response started: cut short), and shut the connection down."""
    environ = request.environ
    if claimed:
        content_type, body, headers = _page(request)
        framing = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        lines = ["HTTP/1.1 503 Service Unavailable\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in [*framing, *headers]]
        head = "".join(lines).encode("latin-1") + b"\r\n"
        data = head if environ.get("REQUEST_METHOD") == "HEAD" else head + body
        with contextlib.suppress(OSError):
            environ["gunicorn.socket"].send(data, socket.MSG_DONTWAIT)
    _cut(environ)
    log.error("%s %s is stuck past its deadline and grace: %s (ticket %s)",
              environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"),
              "answered 503" if claimed else "response cut short", request.ticket)  # fmt: skip


def _cut(environ: dict) -> None:
    """End the request's connection now (nothing more can reach the client on it)."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        raise ConnectionAbortedError("the response is cut short: it ran past its deadline")
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
