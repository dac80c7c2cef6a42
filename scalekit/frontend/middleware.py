"""WSGI glue: ``FrontendMiddleware`` for a whole app, ``with_frontend`` for one view.

Per request, in this order: the trusted proxies' headers applied (or removed, from anyone
else) and hop-by-hop request headers stripped; the request id kept or made (environ,
context variable, log records, ``X-Request-ID``); the instance facts (node, version) put in
the environ; the request's log level watched; the app run under its deadline; then on the
way out its headers cleaned (:mod:`scalekit.frontend.responses`), its body compressed,
held to ``max_response_size`` and counted, and one access record written when the server
closes the response.

A finished body (a list) takes the short path: checked, compressed in one go, given a
``Content-Length``, and logged before it is returned. Any other body is passed on chunk by
chunk by one wrapper, the headers held until its first chunk (so that a body failing or
too large before it said anything still becomes a 500 page); but the server's own
``wsgi.file_wrapper`` with a ``Content-Length`` and nothing to compress is handed back as it
is, so that the server can still ``sendfile`` it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextvars import Token
from time import perf_counter
from typing import Any

from scalekit.core import context
from scalekit.core.errors import ConfigError
from scalekit.core.instance import app_version, node_name
from scalekit.core.options import known_options
from scalekit.core.scrub import scrub_text
from scalekit.frontend.compression import Compression, Encoder
from scalekit.frontend.deadline import Deadline
from scalekit.frontend.forwarded import Forwarding, strip_hop_by_hop
from scalekit.frontend.logs import AccessLog, LogWatch, install_log_records
from scalekit.frontend.request_ids import request_id_of
from scalekit.frontend.responses import (
    ResponseTooLarge,
    abort,
    bodiless,
    clean_headers,
    error_page,
    report,
    status_code,
)
from scalekit.wsgi.environ import NODE_KEY, REQUEST_ID_KEY, VERSION_KEY
from scalekit.wsgi.http import header_value, request_line
from scalekit.wsgi.response import ClosingBody, chain_close
from scalekit.wsgi.views import per_view

__all__ = ["MAX_RESPONSE_SIZE", "FrontendMiddleware", "with_frontend"]

log = logging.getLogger("scalekit.frontend")

#: The default ``max_response_size``: 32 MiB, App Engine's limit.
MAX_RESPONSE_SIZE = 32 << 20
_ACCESS_FORMATS = ("json", "logfmt")
Headers = list[tuple[str, str]]


class FrontendMiddleware:
    """What App Engine's frontend does for every request, around ``app`` (see the module
    docstring).

    ``trusted_proxies``: addresses and networks of the balancers whose forwarding headers
    (and ``X-Request-ID``) are believed. ``access_log``: ``"json"``, ``"logfmt"``, or None
    for no access record (logger ``scalekit.access``). ``compress``: gzip/brotli of dynamic
    responses; the other keywords go to :class:`~scalekit.frontend.compression.Compression`.
    ``max_response_size``: bytes of the app's body (before compression); over it, a 500 page
    if the headers are not sent yet, else the connection is aborted. ``deadline``, ``grace``,
    ``server_timeout``: see :class:`~scalekit.frontend.deadline.Deadline` (``deadline=None``:
    none). ``node``, ``version``: this server's name and the app's version (default
    ``$SCALEKIT_NODE`` else the host name, ``$SCALEKIT_VERSION`` else ``unknown``), in the
    environ and the access log; ``node_header=True`` also sends the node as ``X-Node``.
    """

    @known_options(Compression)
    def __init__(
        self,
        app: Callable,
        *,
        trusted_proxies: Iterable[str] | str = (),
        access_log: str | None = "json",
        compress: bool = True,
        max_response_size: int = MAX_RESPONSE_SIZE,
        deadline: float | None = 60.0,
        grace: float = 1.0,
        server_timeout: float | None = None,
        node: str | None = None,
        version: str | None = None,
        node_header: bool = False,
        **compression: Any,
    ):
        if access_log not in (None, *_ACCESS_FORMATS):
            raise ConfigError(f"access_log={access_log!r:.40}: use 'json', 'logfmt' or None")
        if isinstance(max_response_size, bool) or not isinstance(max_response_size, int):
            raise ConfigError(f"max_response_size={max_response_size!r:.40}: give bytes, an int")
        if max_response_size <= 0:
            raise ConfigError(f"max_response_size={max_response_size}: must be positive")
        if compression and not compress:
            raise ConfigError(f"{', '.join(sorted(compression))} given with compress=False")
        self.app = app if deadline is None else Deadline(app, deadline, grace, server_timeout)
        self.forwarding = Forwarding(trusted_proxies)
        self.access = None if access_log is None else AccessLog(access_log)
        self.compression = Compression(**compression) if compress else None
        self.limit = max_response_size
        self.node = header_value(node or node_name(), "node")
        self.version = header_value(version or app_version(), "version")
        if node_header and not self.node.isascii():
            raise ConfigError(f"node={self.node!r}: X-Node needs an ASCII name")
        self.added = [("X-Node", self.node)] if node_header else []
        self.replaced = frozenset({"x-request-id", *(n.lower() for n, _ in self.added)})
        install_log_records()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        began = perf_counter()
        forwarding = self.forwarding
        trusted = forwarding.trusts(environ)
        forwarding.apply(environ)
        strip_hop_by_hop(environ)
        request = request_id_of(environ, trusted)
        environ[REQUEST_ID_KEY] = environ["HTTP_X_REQUEST_ID"] = request
        environ[NODE_KEY] = self.node
        environ[VERSION_KEY] = self.version
        token = context.request_id.set(request)
        watch = None if self.access is None else LogWatch.start(request)
        if self.compression is not None:
            self.compression.prepare(environ)
        exchange = _Exchange(self, environ, start_response, request, token, watch, began)
        try:
            result = self.app(environ, exchange)
        except Exception as exc:  # noqa: BLE001 - nothing but a 500 page reaches the client
            try:
                return exchange.failed(exc)
            finally:
                exchange.close()
        except BaseException:
            exchange.close()
            raise
        if type(result) is list and not exchange.sent:  # (sent: the app used write())
            return exchange.finished(result)
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and type(result) is wrapper and not exchange.sent:
            passed = exchange.file(result)
            if passed is not None:
                return passed
        return _Streamed(result, exchange)


class _Exchange:
    """One request's response on its way out: the ``start_response`` the app is given (its
    status and headers held until the body says how long it is), the body's checks, and
    the access record at the end."""

    __slots__ = ("began", "dead", "encoder", "environ", "frontend", "headers", "produced",
                 "request", "sent", "sent_bytes", "start_response", "status", "token", "watch",
                 "writer")  # fmt: skip

    def __init__(self, frontend: FrontendMiddleware, environ: dict, start_response: Callable,
                 request: str, token: Token, watch: LogWatch | None, began: float):  # fmt: skip
        self.frontend, self.environ, self.start_response = frontend, environ, start_response
        self.request, self.token, self.watch, self.began = request, token, watch, began
        self.status: str | None = None
        self.headers: Headers = []
        self.encoder: Encoder | None = None
        self.writer: Callable[[bytes], Any] | None = None
        self.sent = self.dead = False  # headers sent; response aborted
        self.produced = self.sent_bytes = 0  # the app's bytes; the bytes sent (compressed)

    def __call__(self, status: str, headers: Headers, exc_info: Any = None) -> Callable:
        """The app's ``start_response`` (PEP 3333: called again with ``exc_info`` only to
        replace a response that is not sent yet)."""
        if exc_info is not None and self.sent:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status, self.headers = status, headers
        return self.write

    # -- the two kinds of body --------------------------------------------------------
    def finished(self, body: list[bytes]) -> list[bytes]:
        """A finished body: checked, compressed whole, sent with its length, logged."""
        try:
            length = sum(map(len, body))
            if length > self.frontend.limit:
                return self.too_large(length)
            headers, declared = self.prepared(length)
            if declared is not None and declared > self.frontend.limit:
                return self.too_large(declared)
            if self.encoder is not None:
                body = [self.encoder.whole(b"".join(body))]
                headers.append(("Content-Length", str(len(body[0]))))
            elif declared is None and not self.head_or_bodiless():
                headers.append(("Content-Length", str(length)))
            self.send(headers)
            self.produced = length
            self.sent_bytes = sum(map(len, body))
            return body
        except Exception as exc:  # noqa: BLE001 - a header the server refuses, a failing encoder
            return self.failed(exc)
        finally:
            self.close()

    def file(self, body: Any) -> Any:
        """The server's ``wsgi.file_wrapper`` passed on as it is (so the server can use
        ``sendfile``), its ``close()`` ending the request, when it needs nothing done to it:
        not compressed, its declared length within the limit. Else None: it is streamed
        (where a failure to prepare its headers becomes the 500 page)."""
        try:
            headers, declared = self.prepared(None)
        except Exception:  # noqa: BLE001 - answered by the streamed path
            return None
        if self.encoder is not None or declared is None or declared > self.frontend.limit:
            self.encoder = None
            return None
        if chain_close(body, self.close) is None:  # a wrapper that takes no attribute: streamed
            return None
        self.send(headers)
        self.produced = self.sent_bytes = 0 if self.head_or_bodiless() else declared
        return body

    def opened(self, first: int, length: int | None = None) -> list[bytes] | None:
        """Send the headers of a streamed body whose first chunk is ``first`` bytes long
        (``length``: the whole body's, when it ended already); the 500 page to send instead
        when the body is too large already."""
        if first > self.frontend.limit:
            return self.too_large(first)
        headers, declared = self.prepared(length)
        if declared is not None and declared > self.frontend.limit:
            return self.too_large(declared)
        self.send(headers)
        return None

    def passed(self, chunk: bytes) -> bytes | None:
        """``chunk`` as it is sent (compressed), counted; None once the body is over the
        limit (the response must then be aborted)."""
        self.produced += len(chunk)
        if self.produced > self.frontend.limit:
            return None
        if self.encoder is not None:
            chunk = self.encoder.chunk(chunk)
        self.sent_bytes += len(chunk)
        return chunk

    def write(self, data: bytes) -> None:
        """WSGI's legacy ``write()``: the headers sent first, the data checked like a chunk
        (too much of it aborts the response: a 500 page cannot follow data written)."""
        if self.dead:
            return
        if not self.sent:
            self.send(self.prepared(None)[0])
        out = self.passed(data)
        if out is None:
            self.aborted("over max_response_size")
        elif out and self.writer is not None:
            self.writer(out)

    # -- headers ----------------------------------------------------------------------
    def prepared(self, length: int | None) -> tuple[Headers, int | None]:
        """The app's headers cleaned, the front end's added, the encoder chosen; and the
        declared Content-Length."""
        frontend = self.frontend
        if self.status is None:
            raise RuntimeError("the app returned without calling start_response")
        headers, declared = clean_headers(
            self.status, self.headers, self.request, frontend.replaced
        )
        headers.append(("X-Request-ID", self.request))
        headers += frontend.added
        if frontend.compression is not None:
            size = declared if declared is not None else length
            headers, self.encoder = frontend.compression.respond(
                self.environ, self.status, headers, size
            )
        return headers, declared

    def send(self, headers: Headers) -> None:
        self.writer = self.start_response(self.status, headers)
        self.sent = True

    def head_or_bodiless(self) -> bool:
        return self.environ.get("REQUEST_METHOD") == "HEAD" or bodiless(self.status or "200")

    # -- what goes wrong --------------------------------------------------------------
    def too_large(self, size: int) -> list[bytes]:
        """The 500 page for a body of ``size`` bytes, over the limit, with a ticket."""
        limit = self.frontend.limit
        try:
            raise ResponseTooLarge(
                f"{request_line(self.environ)}: the response is {size} bytes, over "
                f"max_response_size={limit}"
            )
        except ResponseTooLarge as exc:
            return self.failed(exc)

    def failed(self, exc: Exception) -> list[bytes]:
        """The 500 page for ``exc`` (a ticket through the ticket middleware below, if any,
        else the error logged, scrubbed); no detail of it reaches the client. After the
        headers: logged, and the response aborted."""
        if self.sent:
            if not self.dead:
                self.aborted(f"{type(exc).__name__}: {scrub_text(str(exc))}")
            return []
        environ = self.environ
        ticket = report(exc, environ, self.request)
        answer = error_page(environ, ticket, self.request, self.frontend.added)
        self.status, self.encoder = answer.status, None
        self.writer = self.start_response(answer.status, answer.headers, (type(exc), exc, None))
        self.sent = True
        if environ.get("REQUEST_METHOD") == "HEAD":
            return []
        self.sent_bytes = len(answer.body)
        return [answer.body]

    def aborted(self, why: str) -> None:
        """Log why the response cannot be finished, and abort it."""
        environ = self.environ
        self.status, self.dead = "500 Internal Server Error", True
        log.error("%s: response aborted after %d bytes: %s (request %s)",
                  request_line(environ), self.sent_bytes, why, self.request)  # fmt: skip
        abort(environ, self.request)

    # -- the end ----------------------------------------------------------------------
    def close(self) -> None:
        """The request is over: its access record written, its context variables reset."""
        frontend, environ = self.frontend, self.environ
        try:
            if self.watch is not None:
                self.watch.stop()
                frontend.access.write(  # type: ignore[union-attr]
                    request_id=self.request,
                    method=environ.get("REQUEST_METHOD", ""),
                    path=environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
                    status=status_code(self.status),
                    bytes=self.sent_bytes,
                    duration=perf_counter() - self.began,
                    client=environ.get("REMOTE_ADDR", ""),
                    node=frontend.node,
                    version=frontend.version,
                    level=self.watch.highest,
                )
        finally:
            context.reset(context.request_id, self.token)


class _Streamed(ClosingBody):
    """A body that is not a list: passed on chunk by chunk (compressed, counted, held to the
    size limit); the headers go with its first non-empty chunk; closing it ends the
    request."""

    def __init__(self, body: Iterable[bytes], exchange: _Exchange):
        super().__init__(body, exchange.close)
        self.exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        exchange = self.exchange
        try:
            for chunk in self.body:
                if not exchange.sent:
                    if not chunk:
                        continue
                    replaced = exchange.opened(len(chunk))
                    if replaced is not None:
                        yield from replaced
                        return
                out = exchange.passed(chunk)
                if out is None:
                    break
                if out:
                    yield out
            else:
                if not exchange.sent:
                    replaced = exchange.opened(0, 0)  # an empty body
                    if replaced is not None:
                        yield from replaced
                        return
                if exchange.encoder is not None:
                    tail = exchange.encoder.finish()
                    exchange.sent_bytes += len(tail)
                    yield tail
                return
        except Exception as exc:  # noqa: BLE001 - a failing body: a 500 page, or an abort
            yield from exchange.failed(exc)
            return
        exchange.aborted("over max_response_size")


@known_options(FrontendMiddleware)
def with_frontend(**options: Any) -> Callable[[Callable], Callable]:
    """Decorate one WSGI view with the front end, as ``FrontendMiddleware`` does."""
    return per_view(FrontendMiddleware, **options)
