"""Serve an admin app on its own: what ``scalekit tickets serve`` and ``scalekit tasks serve`` run.

A single-threaded ``wsgiref`` server (an admin page for a few people; the stores' connections
stay in one thread). Request lines are logged without their query string, so a ``?token=``
never reaches a log; a failure is one log line and a bare 500, never a traceback. SIGINT and
SIGTERM stop it after the request under way (wsgiref would swallow an interrupt raised
while it writes a response).
"""

from __future__ import annotations

import io
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from scalekit.wsgi.http import request_line
from scalekit.wsgi.pages import NO_STORE, TEXT, page

__all__ = ["open_server", "serve_until_signalled", "url_of"]


class _Handler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.log.info("%s %s %s", self.command, self.path.partition("?")[0], code)

    def log_message(self, format: str, *args: object) -> None:
        """wsgiref's own messages may quote the request line (and its token): dropped."""

    def get_stderr(self) -> io.StringIO:
        """Where wsgiref prints the traceback of a failed response: not the terminal."""
        return io.StringIO()


class _Server(WSGIServer):
    log = logging.getLogger("scalekit")
    name = "viewer"

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: tuple) -> None:
        self.log.warning("%s: the connection from %s failed", self.name, client_address[0])


def open_server(
    app: Callable, host: str, port: int, *, name: str, log: logging.Logger
) -> WSGIServer:
    """A server for ``app`` bound to ``host:port`` (0: a free port), not yet serving; its
    lines in ``log`` begin with ``name`` ("tickets viewer")."""

    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            return app(environ, start_response)
        except Exception as exc:  # noqa: BLE001 - one log line, no traceback to anyone
            log.error("%s: %s failed: %s", name, request_line(environ), type(exc).__name__)
            answer = page("500 Internal Server Error", TEXT, b"Internal error\n", NO_STORE)
            return answer.send(start_response)

    server = make_server(host, port, guarded, server_class=_Server, handler_class=_Handler)
    server.log, server.name = log, name
    return server


def url_of(server: WSGIServer) -> str:
    """The URL of the root of ``server``: ``http://127.0.0.1:8001/``, ``http://[::1]:8001/``."""
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve_until_signalled(server: WSGIServer) -> None:
    """Serve until SIGINT or SIGTERM (from the main thread), then return."""

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()  # it waits for the loop

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
