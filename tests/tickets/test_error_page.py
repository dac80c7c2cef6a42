"""A custom error page (web2py's ``routes_onerror``): an HTML file or a callable gets the
ticket id; if it fails, the built-in page is sent; a traceback never is."""

from __future__ import annotations

import json
import logging

import pytest

from scalekit.core.errors import ConfigError
from scalekit.tickets import FolderStore, TicketMiddleware, with_tickets
from tests.tickets.apps import app
from tests.wsgi import Client

PAGE = "<html><body><h1>Sorry</h1><p>Quote {{ticket}} ({{request_id}}) {{other}}</p></body></html>"


@pytest.fixture
def folder(tmp_path) -> FolderStore:
    return FolderStore(tmp_path / "errors")


def fails_with(folder, error_page, accept="text/html"):
    client = Client(TicketMiddleware(app, folder, error_page=error_page))
    return client.request("/boom", headers={"Accept": accept, "X-Request-ID": "req-7"})


def built_in(response) -> bool:
    return "<h1>Internal error</h1>" in response.text


def test_an_html_file_gets_the_ticket_id(folder, tmp_path):
    (tmp_path / "500.html").write_text(PAGE)
    response = fails_with(folder, str(tmp_path / "500.html"))
    ticket = response.header("X-Ticket-ID")
    assert response.status == 500 and folder.load(ticket) is not None
    assert f"<p>Quote {ticket} (req-7) {{{{other}}}}</p>" in response.text
    assert response.header("Content-Type").startswith("text/html")
    assert response.header("Cache-Control") == "no-store"
    assert "bad order" not in response.text and "Traceback" not in response.text
    (tmp_path / "500.html").write_text("changed")  # read once, when the middleware is made
    json_client = fails_with(folder, str(tmp_path / "500.html"), accept="application/json")
    assert json.loads(json_client.body)["ticket"] == json_client.header("X-Ticket-ID")


def test_a_callable_gets_the_ticket_and_request_ids(folder):
    seen = []

    def page(ticket, request_id):
        seen.append((ticket, request_id))
        return f"<p>ticket {ticket}</p>"

    response = fails_with(folder, page)
    assert seen == [(response.header("X-Ticket-ID"), "req-7")]
    assert response.status == 500 and response.text == f"<p>ticket {seen[0][0]}</p>"


@pytest.mark.parametrize("result", [ValueError("page broke"), None, b"bytes"])
def test_a_failing_page_falls_back_to_the_built_in_one(folder, caplog, result):
    def page(ticket, request_id):
        if isinstance(result, Exception):
            raise result
        return result

    with caplog.at_level(logging.ERROR, logger="scalekit.tickets"):
        response = fails_with(folder, page)
    ticket = response.header("X-Ticket-ID")
    assert response.status == 500 and built_in(response) and ticket in response.text
    assert "page broke" not in response.text and "Traceback" not in response.text
    assert f"the custom error page failed (ticket {ticket})" in caplog.text


def test_a_page_that_cannot_be_read_is_a_config_error_at_once(folder, tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the error page .*missing\.html"):
        TicketMiddleware(app, folder, error_page=str(tmp_path / "missing.html"))


def test_the_page_is_shown_when_no_ticket_could_be_written(tmp_path):
    (tmp_path / "errors").write_text("a file where the folder should be")
    (tmp_path / "500.html").write_text(PAGE)
    response = fails_with(f"file://{tmp_path}/errors", str(tmp_path / "500.html"))
    assert response.status == 500 and response.header("X-Ticket-ID") is None
    assert "<p>Quote  (req-7)" in response.text


def test_the_decorator_takes_it_too(folder):
    @with_tickets(folder, error_page=lambda ticket, request_id: f"<b>{ticket}</b>")
    def view(environ, start_response):
        raise LookupError("in the view")

    response = Client(view).request("/")
    assert response.status == 500 and response.text == f"<b>{response.header('X-Ticket-ID')}</b>"
