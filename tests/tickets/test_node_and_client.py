"""Every ticket names the node that wrote it and the client's real address: X-Forwarded-For
is believed only from a trusted proxy (real nginx in front of real gunicorn), a spoofed one
from anyone else is ignored."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from scalekit.cli import main
from scalekit.tickets import FolderStore, TicketMiddleware, TicketViewer
from tests.gunicorn import gunicorn
from tests.servers import NginxServer, ServerStartError
from tests.tickets.apps import app
from tests.wsgi import Client

PROXY, CLIENT, SPOOFED = "127.0.0.2", "127.0.0.3", "203.0.113.66"


@pytest.fixture
def folder(tmp_path) -> FolderStore:
    return FolderStore(tmp_path / "errors")


def ticket_of(folder: FolderStore, response) -> dict:
    return folder.load(response.header("X-Ticket-ID"))


def fail(middleware, remote: str, forwarded: str | None = None):
    def from_remote(environ, start_response):
        environ["REMOTE_ADDR"] = remote
        return middleware(environ, start_response)

    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    return Client(from_remote).request("/boom", headers=headers)


def test_the_node_is_the_option_else_scalekit_node_else_the_host_name(folder, monkeypatch):
    monkeypatch.delenv("SCALEKIT_NODE", raising=False)
    assert ticket_of(folder, fail(TicketMiddleware(app, folder, repeat_window=0), "10.0.0.1"))[
        "node"
    ] == (socket.gethostname())
    monkeypatch.setenv("SCALEKIT_NODE", "node2")
    assert (
        ticket_of(folder, fail(TicketMiddleware(app, folder, repeat_window=0), "10.0.0.1"))["node"]
        == "node2"
    )
    explicit = TicketMiddleware(app, folder, node="web-3", repeat_window=0)
    assert ticket_of(folder, fail(explicit, "10.0.0.1"))["node"] == "web-3"


def test_the_client_is_read_from_trusted_proxies_only(folder):
    guarded = TicketMiddleware(app, folder, trusted_proxies=["10.0.0.0/8"], repeat_window=0)
    request = ticket_of(folder, fail(guarded, "10.0.0.2", f"{SPOOFED}, 198.51.100.7"))["request"]
    assert (request["client"], request["peer"]) == ("198.51.100.7", "10.0.0.2")
    spoofed = ticket_of(folder, fail(guarded, "198.51.100.9", SPOOFED))["request"]
    assert (spoofed["client"], spoofed["peer"]) == ("198.51.100.9", "198.51.100.9")
    untrusting = TicketMiddleware(
        app, folder, repeat_window=0
    )  # no trusted proxies: X-Forwarded-For is noise
    assert ticket_of(folder, fail(untrusting, "10.0.0.2", SPOOFED))["request"]["client"] == (
        "10.0.0.2"
    )


def test_list_show_and_the_viewer_name_the_node_and_the_client(folder, capsys):
    guarded = TicketMiddleware(app, folder, node="node-9", trusted_proxies=["10.0.0.2"])
    ticket = ticket_of(folder, fail(guarded, "10.0.0.2", "198.51.100.7"))
    url = f"file://{folder.folder}"
    assert main(["tickets", "--store", url, "list"]) == 0
    head, line = capsys.readouterr().out.splitlines()[:2]
    assert "node" in head.split() and "node-9" in line.split()
    assert main(["tickets", "--store", url, "show", ticket["id"]]) == 0
    shown = capsys.readouterr().out
    assert "node node-9  host " in shown and "from 198.51.100.7 via 10.0.0.2" in shown
    viewer = TicketViewer(folder, token="viewer-token-123456")
    page = Client(viewer).request(
        f"/ticket/{ticket['id']}", headers={"Authorization": "Bearer viewer-token-123456"}
    )
    assert "node-9" in page.text and "198.51.100.7" in page.text


def test_a_ticket_of_an_older_version_lists_its_host_as_the_node(folder, capsys):
    guarded = TicketMiddleware(app, folder, repeat_window=0)
    ticket = ticket_of(folder, fail(guarded, "10.0.0.1"))
    del ticket["node"], ticket["request"]["peer"]
    folder.save(ticket)
    url = f"file://{folder.folder}"
    assert main(["tickets", "--store", url, "list"]) == 0
    assert ticket["hostname"][:15] in capsys.readouterr().out.splitlines()[1].split()
    assert main(["tickets", "--store", url, "show", ticket["id"]]) == 0
    assert f"node {ticket['hostname']}" in capsys.readouterr().out


def get(port: int, path: str, source: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                            source_address=(source, 0))  # fmt: skip
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_through_nginx_the_ticket_has_the_real_client_and_the_node(tmp_path):
    folder = FolderStore(tmp_path / "errors")
    env = {"SCALEKIT_TEST_TICKETS": f"file://{folder.folder}", "SCALEKIT_TEST_TRUSTED": PROXY,
           "SCALEKIT_NODE": "node-7"}  # fmt: skip
    with gunicorn("tests.tickets.gunicorn_app:application", env, workers=1) as port:
        site = (
            "server { listen 127.0.0.1:{port}; location / { proxy_bind " + PROXY + "; "
            f"proxy_pass http://127.0.0.1:{port}; "
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; } }"
        )
        try:
            nginx = NginxServer(site).start()
        except ServerStartError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            proxied = get(nginx.port, "/boom", CLIENT, {"X-Forwarded-For": SPOOFED})
            direct = get(port, "/early", CLIENT, {"X-Forwarded-For": SPOOFED})  # nginx bypassed
        finally:
            nginx.stop()
    for response, peer in ((proxied, PROXY), (direct, CLIENT)):
        assert response.status == 500
        ticket = folder.load(response.getheader("X-Ticket-ID"))
        assert ticket["node"] == "node-7"
        assert (ticket["request"]["client"], ticket["request"]["peer"]) == (CLIENT, peer)
        assert SPOOFED not in json.dumps(ticket["request"]["client"])
