"""TicketViewer: refuses who is not allowed, renders the three pages (also in Chromium)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from scalekit.cli import main
from scalekit.core.errors import ConfigError
from scalekit.tickets import FolderStore, TicketViewer, open_store
from scalekit.tickets.ticket import new_ticket_id
from scalekit.tickets.viewer import COOKIE, COOKIE_MAX_AGE
from tests.tickets.conftest import spread
from tests.wsgi import Client

TOKEN = "viewer-token-123"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def store(tmp_path) -> FolderStore:
    return FolderStore(tmp_path / "errors")


def request(app, path="/", remote="127.0.0.1", headers=None, query=""):
    """``path?query`` from the client address ``remote``."""

    def from_remote(environ, start_response):
        environ["REMOTE_ADDR"], environ["QUERY_STRING"] = remote, query
        return app(environ, start_response)

    return Client(from_remote).request(path, headers=headers)


def test_it_needs_an_address_or_a_token(store):
    with pytest.raises(ConfigError, match="allowed"):
        TicketViewer(store)
    with pytest.raises(ConfigError, match="not-an-address"):
        TicketViewer(store, allowed=["not-an-address"])


@pytest.mark.parametrize(
    ("remote", "headers", "query", "status"),
    [
        ("10.1.2.3", {}, "", 403),  # not an allowed address, no token
        ("10.1.2.3", {"Authorization": "Bearer wrong"}, "", 403),
        ("10.1.2.3", {}, "token=wrong", 403),
        ("10.1.2.3", {"Authorization": f"Bearer {TOKEN}"}, "", 200),
        ("10.1.2.3", {}, f"token={TOKEN}", 200),
        ("192.168.5.9", {}, "", 200),  # in the allowed network
        ("", {}, "", 403),
    ],
)
def test_access_needs_an_allowed_address_or_the_token(store, remote, headers, query, status):
    spread(store)
    viewer = TicketViewer(store, allowed=["192.168.5.0/24"], token=TOKEN)
    for path in ("/", "/summary"):
        response = request(viewer, path, remote, headers, query)
        assert response.status == status
        assert ("ValueError" in response.text) == (status == 200)


def test_without_a_token_only_allowed_addresses_get_in(store):
    viewer = TicketViewer(store, allowed=["127.0.0.1"])
    assert request(viewer, remote="127.0.0.2", query="token=").status == 403
    assert request(viewer, remote="127.0.0.1").status == 200


def test_the_pages_render_escaped_and_links_never_carry_the_token(store):
    tickets = spread(store)
    viewer = TicketViewer(store, token=TOKEN)
    query = f"token={TOKEN}"
    listing = request(viewer, "/", query=query)
    policy = listing.header("Content-Security-Policy")
    assert policy.startswith("default-src 'none'") and "form-action 'none'" in policy
    assert TOKEN not in listing.text
    for ticket in tickets:
        assert f'href="/ticket/{ticket["id"]}"' in listing.text
    assert "bad &lt;order&gt; &amp; more" in listing.text and "<order>" not in listing.text
    summary = request(viewer, "/summary", query=query).text
    assert "<td>3</td><td>ValueError</td>" in summary and "<td>2</td><td>KeyError</td>" in summary
    page = request(viewer, f"/ticket/{tickets[0]['id']}", query=query)
    assert page.status == 200 and "Traceback (most recent call last)" in page.text
    assert "raise_value_error" in page.text and "<th>Cookie</th><td><code>***</code>" in page.text
    assert request(viewer, "/ticket/NoSuchTicketNoSuchTicket", query=query).status == 404
    assert request(viewer, "/ticket/../../etc/passwd", query=query).status == 404


def test_the_token_is_used_once_then_a_signed_cookie(store, monkeypatch):
    spread(store)
    viewer = TicketViewer(store, token=TOKEN)

    def mounted(environ, start_response):
        environ["SCRIPT_NAME"], environ["REMOTE_ADDR"] = "/admin/errors", "10.1.2.3"
        environ["QUERY_STRING"] = environ.pop("HTTP_X_QUERY", "")
        return viewer(environ, start_response)

    browser = Client(mounted)
    first = browser.request("/", headers={"X-Query": f"token={TOKEN}"})
    attributes = first.header("Set-Cookie").split("; ")
    name, value = attributes[0].split("=", 1)
    assert first.status == 200 and name == COOKIE and TOKEN not in value
    assert {"Path=/admin/errors", "HttpOnly", "SameSite=Strict"} <= set(attributes)
    assert browser.request("/summary").status == 200  # the cookie alone lets it in
    assert browser.request("/summary").header("Set-Cookie") is None  # set once
    tampered = value[:-1] + ("A" if value[-1] != "A" else "B")
    assert Client(mounted).request("/", cookie=f"{COOKIE}={tampered}").status == 403
    other = TicketViewer(store, token="another-token-456")
    other_cookie = request(other, query="token=another-token-456").header("Set-Cookie")
    assert Client(mounted).request("/", cookie=other_cookie.split(";")[0]).status == 403
    wrong = Client(mounted).request("/", headers={"X-Query": "token=wrong"})
    assert wrong.status == 403 and wrong.header("Set-Cookie") is None
    later = time.time() + COOKIE_MAX_AGE + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert browser.request("/").status == 403  # expired


def bad_ticket(store, kind: str, tmp_path) -> str:
    """A ticket id whose file in ``store`` is of the unusable ``kind``."""
    [good, *_] = spread(store)
    path = store.path_of(ticket_id := new_ticket_id())
    if kind == "corrupt":
        with open(path, "wb") as file:
            file.write(b'{"schema": 1, "id": \xff')
    elif kind == "wrong id":
        os.rename(store.path_of(good["id"]), path)
    elif kind == "symlink":
        outside = tmp_path / "outside.json"
        outside.write_text(json.dumps({**good, "id": ticket_id}))
        os.symlink(outside, path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.mkdir(path)
    return ticket_id


@pytest.mark.parametrize("kind", ["corrupt", "wrong id", "symlink", "fifo", "directory"])
def test_an_unusable_ticket_file_is_a_clean_404(store, tmp_path, kind, capsys):
    ticket_id = bad_ticket(store, kind, tmp_path)
    viewer = TicketViewer(store, token=TOKEN)
    page = request(viewer, f"/ticket/{ticket_id}", query=f"token={TOKEN}")
    assert page.status == 404 and "cannot be read" in page.text
    assert request(viewer, "/", query=f"token={TOKEN}").status == 200
    assert request(viewer, "/summary", query=f"token={TOKEN}").status == 200
    assert main(["tickets", "--store", f"file://{store.folder}", "show", ticket_id]) == 1
    assert "cannot be read" in capsys.readouterr().out


def test_a_corrupt_database_row_is_a_clean_404(tmp_path):
    store = open_store(f"sqlite://{tmp_path}/tickets.sqlite")
    [ticket, *_] = spread(store)
    with contextlib.closing(sqlite3.connect(tmp_path / "tickets.sqlite")) as conn:
        conn.execute("UPDATE scalekit_ticket SET ticket_data = '{\"schema\": 1,'")
        conn.commit()
    page = request(
        TicketViewer(store, token=TOKEN), f"/ticket/{ticket['id']}", query=f"token={TOKEN}"
    )
    assert page.status == 404 and "cannot be read" in page.text
    store.close()


def test_every_ticket_field_is_escaped(store):
    [ticket, *_] = spread(store)
    ticket["frames"][-1]["line"] = "<b>9</b>"
    ticket["frames"][-1]["function"] = "<i>f</i>"
    store.save(ticket)
    page = request(
        TicketViewer(store, token=TOKEN), f"/ticket/{ticket['id']}", query=f"token={TOKEN}"
    )
    assert page.status == 200 and "&lt;b&gt;9&lt;/b&gt;" in page.text
    assert "<b>" not in page.text and "<i>" not in page.text


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served_viewer(store) -> Iterator[tuple[str, list[dict]]]:
    tickets = spread(store)
    server = make_server("127.0.0.1", 0, TicketViewer(store, token=TOKEN), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", tickets
    finally:
        server.shutdown()
        server.server_close()


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_browser_renders_the_ticket_page(served_viewer, tmp_path):
    assert os.path.exists(CHROMIUM), "headless Chromium is missing: `make test` installs it"
    base, tickets = served_viewer
    shot = tmp_path / "ticket.png"
    url = f"{base}/ticket/{tickets[-1]['id']}?token={TOKEN}"
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", url)
    assert shot.exists(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 900)
    dom = chromium(tmp_path, "--dump-dom", f"{base}/summary?token={TOKEN}").stdout
    assert "<h1>Summary</h1>" in dom and "<td>3</td><td>ValueError</td>" in dom
    again = chromium(tmp_path, "--dump-dom", f"{base}/summary").stdout  # with the cookie
    assert "<h1>Summary</h1>" in again and "<td>3</td><td>ValueError</td>" in again
    (stranger := tmp_path / "stranger").mkdir()  # a browser that never had the token
    refused = chromium(stranger, "--dump-dom", f"{base}/summary").stdout
    assert "<h1>Forbidden</h1>" in refused and "ValueError" not in refused
