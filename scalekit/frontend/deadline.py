"""The deadline: a request that runs too long is interrupted with :class:`DeadlineExceeded`,
may answer within a grace, and otherwise gets a 503 page and a ticket holding the stack
where it was stuck (the watchdog that does it: :mod:`scalekit.frontend.watchdog`).

The deadline covers the app's call and each step of its body's iteration (not the body's
``close()``, nor a ``wsgi.file_wrapper`` result: handed to the server as it is, it ends the
request when the server closes it). Under gunicorn's sync worker the arbiter kills a
worker whose request outlasts ``--timeout`` (default 30 s; the client gets no answer and
nobody a traceback): at the first request of each worker the deadline is cut, with one
WARNING, to end in time. A gthread worker's timeout does not
bound requests (its main thread tells the arbiter it is alive while others serve).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextvars import Token
from types import CodeType, FrameType

from scalekit.core import context
from scalekit.core.context import remaining
from scalekit.core.errors import ConfigError
from scalekit.core.process import PerProcess
from scalekit.frontend.watchdog import (
    SETTLE,
    WATCHDOG,
    DeadlineExceeded,
    Request,
    cut,
    page_of,
    shorten,
    watchdog,
    where,
    write_ticket,
)
from scalekit.wsgi.pages import page
from scalekit.wsgi.response import ClosingBody, chain_close, close_body

__all__ = ["Deadline", "DeadlineExceeded", "remaining"]

log = logging.getLogger("scalekit.frontend")

#: Seconds kept between the end of a deadline's grace and the server's worker timeout: the
#: request's headers are read, and its answer written, before and after the app runs.
MARGIN = 1.0


class Deadline:
    """``app`` with a deadline of ``seconds`` per request (the call and each step of
    its body) and ``grace`` seconds to answer once :class:`DeadlineExceeded` is raised in
    it; a stuck request gets a 503 page. ``server_timeout``: the server's own limit on a
    request, which the deadline and its grace must end before (:class:`ConfigError`
    otherwise); under gunicorn's sync worker it is found at the first request."""

    codes: frozenset[CodeType]  # its frames, where a ticket's stack of the app starts

    def __init__(self, app: Callable, seconds: float = 60.0, grace: float = 1.0,
                 server_timeout: float | None = None):  # fmt: skip
        if not seconds > 0 or not grace >= 0:
            raise ConfigError(
                f"deadline {seconds!r} s, grace {grace!r} s: a deadline > 0, grace >= 0"
            )
        if server_timeout is not None and seconds + grace + SETTLE + MARGIN > server_timeout:
            raise ConfigError(
                f"a deadline of {seconds:g} s with {grace:g} s of grace does not end "
                f"{MARGIN:g} s before the server's timeout of {server_timeout:g} s: lower "
                "the deadline or raise the server's timeout"
            )
        self.app, self.seconds, self.grace = app, float(seconds), float(grace)
        self._fitted = PerProcess(self._fit)
        shorten(self.seconds)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        dog = watchdog.get()
        self._fitted.get()
        outer = context.deadline.get()
        at = time.monotonic() + self.seconds
        thread = threading.get_ident()
        at = at if outer is None else min(at, outer.at)
        request = Request(at, thread, environ, self, start_response)
        if thread == dog.main and not dog.alarm:
            dog.install_alarm()
        token = context.deadline.set(request)
        dog.requests.add(request)
        body = None
        try:
            body = self.app(environ, request.start)
            # an interrupt may still land here, as leave() is called: the same as in the app
            if type(body) is list:  # a finished answer: the request is over
                answering = dog.leave(request, claim=True, done=True)
            else:
                dog.leave(request, claim=False, done=False)
        except DeadlineExceeded as exc:
            dog.leave(request, claim=False, done=False)
            try:
                close_body(body)  # (a body returned just before: not sent)
                return self._exceeded(request, exc, start_response)
            finally:
                _end(request, token)
        except BaseException:
            try:
                close_body(body)
            finally:
                _end(request, token)
            raise
        context.deadline.reset(token)  # set above, in this context; for a body: again
        if type(body) is list:  # around each step of it
            return body if answering else self._dropped(request, body, start_response)
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and type(body) is wrapper and _passed(request, body):
            return body  # as it is: the server may send it with sendfile
        return _Body(self, request, body, start_response)

    def _steps(self, request: Request, body: Iterable[bytes], start_response: Callable
               ) -> Iterator[bytes]:  # fmt: skip
        """The app's body, each step of it under the deadline (the deadline the current
        one during the step only); the first step that ends claims the answer; the request
        ends with the body (and in any case when it is closed: :class:`_Body`)."""
        dog = watchdog.get()
        chunks = None
        while True:
            token = context.deadline.set(request)
            late = dog.enter(request)
            try:
                try:
                    if late:
                        raise DeadlineExceeded
                    if chunks is None:
                        chunks = iter(body)
                    chunk = next(chunks)
                    answering = dog.leave(request, claim=True, done=False)
                finally:
                    context.deadline.reset(token)
            except StopIteration:
                if not dog.leave(request, claim=True, done=True):
                    yield from self._dropped(request, [], start_response)
                return
            except DeadlineExceeded as exc:
                dog.leave(request, claim=False, done=False)
                yield from self._exceeded(request, exc, start_response)
                return
            except BaseException:
                dog.leave(request, claim=False, done=True)
                raise
            if not answering:
                yield from self._dropped(request, [], start_response)
                return
            yield chunk

    def _exceeded(self, request: Request, exc: DeadlineExceeded, start_response: Callable
                  ) -> list[bytes]:  # fmt: skip
        """:class:`DeadlineExceeded` reached this layer: the 503 page if nobody answered."""
        if request.ticketed is None:  # raised by the app itself, not by the watchdog
            request.ticket = write_ticket(exc, request.environ)
        else:
            request.ticketed.wait(max(request.at - time.monotonic(), 0.0) + SETTLE)
        if not watchdog.get().claim(request):
            return self._dropped(request, [], start_response)
        log.error("%s: deadline exceeded, answered 503 (ticket %s)", where(request), request.ticket)
        content_type, body, headers = page_of(request)
        answer = page("503 Service Unavailable", content_type, body, *headers)
        return answer.send(start_response, (DeadlineExceeded, exc, exc.__traceback__))

    def _dropped(self, request: Request, body: Iterable[bytes], start_response: Callable
                 ) -> list[bytes]:  # fmt: skip
        """Nothing more from a late request (its ``body`` closed): the watchdog answered it
        on the socket (the server is told the same 503; its write fails on the closed
        connection), or its response had started and is cut short."""
        close_body(body)
        if request.answer == WATCHDOG:
            content_type, page_body, headers = page_of(request)
            error = DeadlineExceeded()
            page("503 Service Unavailable", content_type, page_body, *headers).send(
                start_response, (DeadlineExceeded, error, None)
            )
        else:
            cut(request.environ)
        return []

    def _fit(self) -> bool:
        """Cut the deadline to end before a gunicorn sync worker's timeout (this process's
        worker, found on the stack of its first request)."""
        timeout = _sync_worker_timeout(sys._getframe())
        longest = None if timeout is None else timeout - self.grace - SETTLE - MARGIN
        if longest is not None and self.seconds > longest:
            seconds = max(longest, timeout / 4)
            log.warning(
                "deadline of %g s + %g s of grace cut to %g s: gunicorn's sync worker kills "
                "a request after its timeout of %g s (raise --timeout to keep it)",
                self.seconds, self.grace, seconds, timeout,
            )  # fmt: skip
            self.seconds = seconds
            shorten(seconds)
        return True


Deadline.codes = frozenset({Deadline.__call__.__code__, Deadline._steps.__code__})


class _Body(ClosingBody):
    """The app's body (not a list) under the deadline: each step of its iteration is
    (:meth:`Deadline._steps`); ``close()`` closes it and ends the request, also when the
    server closes it without iterating it (or before its end)."""

    def __init__(self, layer: Deadline, request: Request, body: Iterable[bytes],
                 start_response: Callable):  # fmt: skip
        super().__init__(body, lambda: _end(request))
        self.layer, self.request, self.start_response = layer, request, start_response
        self.steps: Generator[bytes, None, None] | None = None

    def __iter__(self) -> Iterator[bytes]:
        if self.steps is None:
            self.steps = self.layer._steps(self.request, self.body, self.start_response)
        return self.steps

    def close(self) -> None:
        try:
            if self.steps is not None:
                self.steps.close()
        finally:
            super().close()


def _passed(request: Request, body: object) -> bool:
    """Whether the server's ``wsgi.file_wrapper`` ``body`` is handed back as it is: its
    answer claimed, its ``close()`` ending the request (its sending is the server's code:
    not interrupted). False: it is iterated under the deadline instead."""
    restore = chain_close(body, lambda: _end(request))
    if restore is None:
        return False
    if not watchdog.get().claim(request):  # the watchdog answered meanwhile
        restore()
        return False
    return True


def _end(request: Request, token: Token | None = None) -> None:
    """The request is over: unwatched, its deadline (set with ``token``) no longer the
    current one."""
    watchdog.get().leave(request, claim=False, done=True)
    if token is not None:
        context.reset(context.deadline, token)


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
