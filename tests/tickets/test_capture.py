"""TicketMiddleware in-process: the ticket written, the page the client sees, and the logs."""

from __future__ import annotations

import io
import json
import logging

import pytest

from scalekit.tickets import FolderStore, TicketMiddleware, with_tickets
from tests.tickets.apps import SECRETS, Closing, app
from tests.wsgi import Client

HEADERS = {
    "Cookie": "sid=cookie-value-1",
    "Authorization": "Basic dXNlcjpwdw==",
    "X-Api-Key": "header-key-9",
    "X-Request-ID": "req-abc.1",
    "User-Agent": "pytest",
}


@pytest.fixture
def folder(tmp_path) -> FolderStore:
    return FolderStore(tmp_path / "errors")


def only_ticket(folder: FolderStore) -> tuple[dict, str]:
    [path] = list(folder.pending())
    with open(path) as file:
        raw = file.read()
    return json.loads(raw), raw


def test_a_failure_writes_a_complete_ticket_without_secrets(folder):
    client = Client(TicketMiddleware(app, folder, app_name="shop"))
    response = client.request("/boom", headers=HEADERS)
    ticket, raw = only_ticket(folder)
    assert response.status == 500
    assert response.header("X-Request-ID") == "req-abc.1" == ticket["request_id"]
    assert response.header("X-Ticket-ID") == ticket["id"]
    assert ticket["id"] in response.text and "Traceback" not in response.text
    assert "ValueError" not in response.text and "bad order" not in response.text
    for secret in (*SECRETS, "cookie-value-1", "dXNlcjpwdw==", "header-key-9"):
        assert secret not in raw  # scrubbed in every part of the file
    assert ticket["schema"] == 1 and ticket["app"] == "shop" and ticket["pid"] > 0
    assert ticket["hostname"] and ticket["created"].endswith("Z")
    request = ticket["request"]
    assert (request["method"], request["path"], request["client"]) == ("GET", "/boom", "127.0.0.1")
    headers = request["headers"]
    assert headers["Cookie"] == headers["Authorization"] == headers["X-Api-Key"] == "***"
    assert headers["User-Agent"] == "pytest"
    error = ticket["error"]
    assert (error["type"], error["message"]) == ("ValueError", "bad order ")
    assert 'raise ValueError(f"bad order' in error["traceback"]
    frame = ticket["frames"][-1]
    assert frame["function"] == "boom" and frame["file"].endswith("tests/tickets/apps.py")
    assert error["location"] == f"{frame['file']}:{frame['line']} in boom"
    context = frame["context"]
    assert 'raise ValueError(f"bad order' in context["lines"][frame["line"] - context["first_line"]]
    local = frame["locals"]
    assert local["password"] == local["api_token"] == "***"
    assert local["visible"] == "'plain-value'"
    assert local["dsn"] == "'postgres://app:***@db.internal/shop'"
    assert local["settings"] == "{'debug': True, 'secret_key': ***}"
    assert "'HTTP_COOKIE': ***" in ticket["frames"][-2]["locals"]["environ"]
    assert ticket["versions"]["python"].count(".") == 2
    assert "pydal" in ticket["versions"]["packages"]


def test_query_secrets_are_scrubbed_and_a_bad_request_id_is_replaced(folder):
    middleware = TicketMiddleware(app, folder, repeat_window=0)  # two tickets of one failure
    environ_headers = {"X-Request-ID": "bad id with spaces <script>"}
    client = Client(middleware)
    response = client.request("/boom", headers=environ_headers)
    ticket, _ = only_ticket(folder)
    assert response.header("X-Request-ID") == ticket["request_id"]
    assert len(ticket["request_id"]) == 32 and "script" not in ticket["request_id"]
    folder.remove(folder.path_of(ticket["id"]))
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/boom",
        "QUERY_STRING": "page=2&access_token=qs-secret",
        "wsgi.input": io.BytesIO(),
    }
    middleware(environ, lambda *args: None)
    ticket, raw = only_ticket(folder)
    assert ticket["request"]["query"] == "page=2&access_token=***" and "qs-secret" not in raw


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("application/json", "application/json"),
        ("text/html,*/*;q=0.8", "text/html"),
        ("", "text/html"),
        ("text/html;q=0.5, application/json", "application/json"),
        ("*/*", "text/html"),
    ],
)
def test_the_error_page_is_html_or_json_by_accept(folder, accept, kind):
    response = Client(TicketMiddleware(app, folder)).request("/boom", headers={"Accept": accept})
    ticket, _ = only_ticket(folder)
    assert response.status == 500 and response.header("Content-Type").startswith(kind)
    assert response.header("Cache-Control") == "no-store"
    if kind == "application/json":
        assert json.loads(response.body) == {
            "error": "internal server error",
            "ticket": ticket["id"],
            "request_id": response.header("X-Request-ID"),
        }
    else:
        assert f"<code>{ticket['id']}</code>" in response.text


def test_a_successful_request_passes_through_untouched(folder):
    response = Client(TicketMiddleware(app, folder)).request("/")
    assert (response.status, response.body) == (200, b"ok")
    assert response.headers == [("Content-Type", "text/plain")]
    assert list(folder.pending()) == []


def test_an_error_before_the_first_byte_still_gets_the_error_page(folder):
    response = Client(TicketMiddleware(app, folder)).request("/early")
    ticket, _ = only_ticket(folder)
    assert response.status == 500 and ticket["id"] in response.text
    assert ticket["error"]["type"] == "KeyError"


def test_an_error_after_the_response_started_is_logged_and_the_body_ends(folder, caplog):
    before = Closing.closed
    with caplog.at_level(logging.ERROR, logger="scalekit.tickets"):
        response = Client(TicketMiddleware(app, folder)).request("/late")
    ticket, _ = only_ticket(folder)
    assert (response.status, response.body) == (200, b"partial ")
    assert Closing.closed == before + 1  # the app's body was closed
    assert f"after its response started (ticket {ticket['id']})" in caplog.text
    assert ticket["error"]["message"] == "broke after the first chunk"


def test_a_store_that_fails_never_hides_the_original_error(tmp_path, caplog):
    (tmp_path / "errors").write_text("a file where the folder should be")
    with caplog.at_level(logging.ERROR, logger="scalekit.tickets"):
        response = Client(TicketMiddleware(app, f"file://{tmp_path}/errors")).request(
            "/boom", headers={"Accept": "application/json"}
        )
    assert response.status == 500
    assert json.loads(response.body)["ticket"] is None
    assert response.header("X-Ticket-ID") is None
    original, store_error = caplog.records[-2:]
    assert original.exc_info[0] is ValueError and "no ticket could be written" in original.message
    assert "ticket folder" in str(store_error.exc_info[1])


def test_the_decorator_guards_one_view(folder):
    @with_tickets(folder, app_name="view")
    def view(environ, start_response):
        raise LookupError("in the view")

    response = Client(view).request("/")
    ticket, _ = only_ticket(folder)
    assert response.status == 500 and view.__name__ == "view"
    assert (ticket["app"], ticket["error"]["type"]) == ("view", "LookupError")
