"""TicketMiddleware gives the request's id to everything below it through
``scalekit.core.context.request_id``: the same id the error page and the ticket show."""

from __future__ import annotations

import json
from collections.abc import Iterator

from scalekit.core import context
from scalekit.tickets import FolderStore, TicketMiddleware
from tests.wsgi import Client


def seen_by(views: list[str | None]):
    """A view that records the request id it sees, answers it, and fails on ``/boom``
    (``/stream``: a streamed body that records the id while it is iterated)."""

    def view(environ, start_response):
        views.append(context.request_id.get())
        if environ["PATH_INFO"] == "/boom":
            raise ValueError("boom")
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/stream":
            return streamed(views)
        return [views[-1].encode()]

    return view


def streamed(views: list[str | None]) -> Iterator[bytes]:
    views.append(context.request_id.get())
    yield b"chunk"


def test_a_view_sees_the_incoming_request_id_and_it_is_gone_after(tmp_path):
    views: list[str | None] = []
    client = Client(TicketMiddleware(seen_by(views), FolderStore(tmp_path)))
    assert client.request("/", headers={"X-Request-ID": "req-given.7"}).text == "req-given.7"
    client.request("/stream", headers={"X-Request-ID": "req-stream.8"})
    assert views == ["req-given.7", "req-stream.8", "req-stream.8"]
    assert context.request_id.get() is None


def test_a_new_id_is_made_and_the_error_page_shows_the_one_the_view_saw(tmp_path):
    views: list[str | None] = []
    client = Client(TicketMiddleware(seen_by(views), FolderStore(tmp_path)))
    first, second = client.request("/").text, client.request("/").text
    assert len(first) == 32 and first != second
    response = client.request("/boom", headers={"Accept": "application/json"})
    assert response.status == 500
    assert json.loads(response.body)["request_id"] == views[-1]
    assert response.header("X-Request-ID") == views[-1]
    assert context.request_id.get() is None
