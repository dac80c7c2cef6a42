"""Behind the request front end a ticket carries the front end's request id, node and app
version, and the front end writes its own tickets (size limit, deadline) through the
``capture`` TicketMiddleware leaves in ``environ[TICKET_CAPTURE_KEY]``: also from a watchdog
thread, with the stack of a thread that is still running."""

from __future__ import annotations

import json
import socket
import sys
import threading
import types
from collections.abc import Callable

import pytest

from scalekit.core import context
from scalekit.core.instance import app_version, node_name
from scalekit.tickets import FolderStore, TicketMiddleware, with_tickets
from scalekit.wsgi.environ import (
    NODE_KEY,
    PEER_KEY,
    REQUEST_ID_KEY,
    TICKET_CAPTURE_KEY,
    TICKET_KEY,
    VERSION_KEY,
)
from tests.tickets.apps import app
from tests.wsgi import Client

FRONT_ID = "front-req.42"
CLIENT = "198.51.100.7"  # the client's address a trusted proxy gave


class TooLarge(Exception):
    """What the stand-in front end reports when a response passes its size limit."""


def front(inner: Callable, node: str = "node-f", version: str = "v7") -> Callable:
    """What FrontendMiddleware does around the app for the tickets: its request id in the
    environ, ``X-Request-ID`` and the context variable, its instance facts in the environ,
    and a ticket through ``capture`` when the body passes a limit (``/big``)."""

    def middleware(environ, start_response):
        environ.update({REQUEST_ID_KEY: FRONT_ID, "HTTP_X_REQUEST_ID": FRONT_ID,
                        NODE_KEY: node, VERSION_KEY: version,
                        PEER_KEY: environ["REMOTE_ADDR"], "REMOTE_ADDR": CLIENT})  # fmt: skip
        token = context.request_id.set(FRONT_ID)
        try:
            body = b"".join(inner(environ, start_response))
            if environ["PATH_INFO"] == "/big":
                try:
                    raise TooLarge(f"{len(body)} bytes")
                except TooLarge as exc:
                    ticket = environ[TICKET_CAPTURE_KEY](exc, environ, FRONT_ID)
                return [f"ticket {ticket}".encode()]
            return [body]
        finally:
            context.request_id.reset(token)

    return middleware


@pytest.fixture
def folder(tmp_path) -> FolderStore:
    return FolderStore(tmp_path / "errors")


def test_node_and_version_come_from_the_environment_else_the_host_and_unknown(monkeypatch):
    monkeypatch.delenv("SCALEKIT_NODE", raising=False)
    monkeypatch.delenv("SCALEKIT_VERSION", raising=False)
    assert (node_name(), app_version()) == (socket.gethostname(), "unknown")
    monkeypatch.setenv("SCALEKIT_NODE", "node2")
    monkeypatch.setenv("SCALEKIT_VERSION", " 2026.12.1 ")
    assert (node_name(), app_version()) == ("node2", "2026.12.1")
    monkeypatch.setenv("SCALEKIT_VERSION", "")  # set but empty: not a version
    assert app_version() == "unknown"


def test_a_ticket_behind_the_front_end_has_its_request_id_node_and_version(folder):
    client = Client(front(TicketMiddleware(app, folder, repeat_window=0)))
    response = client.request("/boom", headers={"X-Request-ID": "client-said-this"})
    assert response.status == 500 and response.header("X-Request-ID") == FRONT_ID
    ticket = folder.load(response.header("X-Ticket-ID"))
    assert (ticket["request_id"], ticket["node"], ticket["version"]) == (FRONT_ID, "node-f", "v7")
    assert (ticket["request"]["client"], ticket["request"]["peer"]) == (CLIENT, "127.0.0.1")


def test_explicit_node_and_version_win_and_without_a_front_end_the_process_decides(
    folder, monkeypatch
):
    explicit = TicketMiddleware(app, folder, node="web-3", version="v8", repeat_window=0)
    ticket = folder.load(Client(front(explicit)).request("/boom").header("X-Ticket-ID"))
    assert (ticket["node"], ticket["version"]) == ("web-3", "v8")
    monkeypatch.setenv("SCALEKIT_NODE", "node-e")
    monkeypatch.setenv("SCALEKIT_VERSION", "2026.12.5")
    alone = Client(TicketMiddleware(app, folder, repeat_window=0)).request("/boom")
    ticket = folder.load(alone.header("X-Ticket-ID"))
    assert (ticket["node"], ticket["version"]) == ("node-e", "2026.12.5")
    assert ticket["request_id"] == alone.header("X-Request-ID") != FRONT_ID


def test_a_view_with_its_own_tickets_reuses_the_request_id_of_the_layer_outside(folder):
    seen = []

    @with_tickets(folder, repeat_window=0)
    def view(environ, start_response):
        seen.append((environ[REQUEST_ID_KEY], context.request_id.get()))
        raise ValueError("in the view")

    outer = TicketMiddleware(view, FolderStore(folder.folder + "-outer"), repeat_window=0)
    response = Client(outer).request("/", headers={"X-Request-ID": "given-id.1"})
    assert seen == [("given-id.1", "given-id.1")]
    assert folder.load(response.header("X-Ticket-ID"))["request_id"] == "given-id.1"
    token = context.request_id.set("set-outside.2")  # a layer that only set the variable
    try:
        response = Client(view).request("/")
    finally:
        context.request_id.reset(token)
    assert seen[-1] == ("set-outside.2", "set-outside.2")
    assert folder.load(response.header("X-Ticket-ID"))["request_id"] == "set-outside.2"


def test_the_front_end_writes_its_ticket_through_the_outermost_capture(folder):
    inner = FolderStore(folder.folder + "-view")
    viewed = with_tickets(inner)(app)
    client = Client(front(TicketMiddleware(viewed, folder, app_name="shop")))
    body = client.request("/big").text
    ticket_id = body.split()[-1]
    ticket = folder.load(ticket_id)
    assert ticket["error"]["type"].endswith("TooLarge") and ticket["app"] == "shop"
    assert (ticket["request_id"], ticket["node"], ticket["version"]) == (FRONT_ID, "node-f", "v7")
    assert list(inner.pending()) == []  # not the view's store: the whole app's


def stack_of(thread: threading.Thread) -> types.TracebackType | None:
    """A traceback of ``thread``'s current stack, outermost frame first (as the deadline's
    watchdog builds it)."""
    frame, tb = sys._current_frames()[thread.ident], None
    while frame is not None:
        tb = types.TracebackType(tb, frame, frame.f_lasti, frame.f_lineno)
        frame = frame.f_back
    return tb


class Exceeded(BaseException):
    """Stands in for DeadlineExceeded: a BaseException, as App Engine's."""


def stuck(started: threading.Event, running: list[bool]) -> None:
    """A handler in a busy loop that keeps changing its locals (calling no Python function,
    so it is the innermost frame whenever it is looked at)."""
    api_token = "tok-stuck-987654"  # what the ticket must scrub
    grows: dict[int, int] = {}
    n = 0
    started.set()
    while running[0]:
        n += 1
        grows[n % 5000] = n
        passing = n
        locals()  # writes the frame's locals dict, as a debugger or tracer would
        del passing
        locals()  # one key fewer: iterating the dict here would fail


def test_watchdog_threads_capture_the_stack_of_a_running_thread(folder):
    middleware = TicketMiddleware(app, folder, app_name="shop", repeat_window=0)
    started, running = threading.Event(), [True]
    handler = threading.Thread(target=stuck, args=(started, running))
    handler.start()
    started.wait(5)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/slow", "REMOTE_ADDR": "10.0.0.9",
               NODE_KEY: "node-w", VERSION_KEY: "v9"}  # fmt: skip
    ids: list[str | None] = []
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: a race shows up if there is one

    def watchdog():
        for _ in range(10):  # each time the stack as it is now, the thread running on
            error = Exceeded("deadline passed").with_traceback(stack_of(handler))
            ids.append(middleware.capture(error, environ, FRONT_ID))

    try:
        watchers = [threading.Thread(target=watchdog) for _ in range(3)]
        for watcher in watchers:
            watcher.start()
        for watcher in watchers:
            watcher.join(30)
        assert handler.is_alive()  # capturing did not disturb the thread
    finally:
        running[0] = False
        sys.setswitchinterval(switching)
        handler.join(5)
    assert None not in ids and len(set(ids)) == len(ids) == 30
    for ticket_id in ids:
        ticket = folder.load(ticket_id)
        assert ticket["error"]["type"].endswith("Exceeded")
        assert ticket["error"]["location"].endswith(" in stuck")
        assert "in stuck" in ticket["error"]["traceback"]
        frame = ticket["frames"][-1]
        assert frame["function"] == "stuck" and frame["locals"]["api_token"] == "***"
        assert "tok-stuck-987654" not in json.dumps(ticket)
        assert (ticket["request_id"], ticket["node"], ticket["version"]) == (
            FRONT_ID, "node-w", "v9"
        )  # fmt: skip
    assert environ[TICKET_KEY] in ids
