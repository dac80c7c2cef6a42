"""A real app under gunicorn (two workers, threads): failing requests become ticket files
with the described content and no secrets; clients see only the ticket id; a flood of one
failure is counted on a few tickets, not written again."""

from __future__ import annotations

import http.client
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from scalekit.tickets import FolderStore
from tests.gunicorn import gunicorn
from tests.tickets.apps import SECRETS


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gunicorn") / "errors"
    env = {"SCALEKIT_TEST_TICKETS": f"file://{folder}"}
    with gunicorn("tests.tickets.gunicorn_app:application", env, workers=2, preload=False) as port:
        yield port, FolderStore(folder)


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_failing_requests_become_ticket_files_and_clients_see_only_the_id(served):
    port, folder = served
    headers = {
        "Cookie": "sid=browser-cookie",
        "Authorization": "Bearer bearer-secret",
        "Accept": "text/html",
    }
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: get(port, f"/boom?n={n}", headers), range(24)))
    ids = set()
    for status, response_headers, body in results:
        assert status == 500 and b"Traceback" not in body and b"ValueError" not in body
        ids.add(response_headers["X-Ticket-ID"])
        assert response_headers["X-Ticket-ID"].encode() in body
    files = {os.path.basename(path)[:-5]: path for path in folder.pending()}
    assert set(files) == ids and len(ids) < 24  # identical failures: counted, not rewritten
    pids, counted = set(), 0
    for path in files.values():
        with open(path) as file:
            raw = file.read()
        for secret in (*SECRETS, "browser-cookie", "bearer-secret"):
            assert secret not in raw
        ticket = json.loads(raw)
        pids.add(ticket["pid"])
        counted += ticket["count"]
        assert ticket["request"]["headers"]["Cookie"] == "***"
        assert ticket["frames"][-1]["locals"]["password"] == "***"
        assert ticket["error"]["message"].startswith("bad order n=")
    assert len(pids) >= 1 and os.getpid() not in pids and counted == 24
    status, response_headers, body = get(port, "/", {})
    assert (status, body) == (200, b"ok") and "X-Request-ID" not in response_headers


def test_a_failure_mid_body_ends_the_response_and_keeps_the_server_healthy(served):
    port, folder = served
    before = set(folder.pending())
    try:
        status, _, body = get(port, "/late", {})
        assert status == 200 and body.startswith(b"partial")
    except http.client.IncompleteRead as exc:  # a body cut short is also a clean end
        assert exc.partial.startswith(b"partial")
    [new] = set(folder.pending()) - before
    with open(new) as file:
        assert json.load(file)["error"]["message"] == "broke after the first chunk"
    assert get(port, "/", {})[0] == 200


def on_disk(folder: FolderStore) -> tuple[int, int, set[str]]:
    """The failures counted by the folder's tickets, their bytes, their paths."""
    paths = set(folder.pending())
    counts = sum(folder.read(path)[0]["count"] for path in paths)
    return counts, sum(os.path.getsize(path) for path in paths), paths


def test_a_flood_of_one_failure_is_counted_on_a_few_tickets(served):
    port, folder = served
    counts, size, paths = on_disk(folder)
    for _ in range(300):
        assert get(port, "/boom", {"Accept": "application/json"})[0] == 500
    counts_after, size_after, paths_after = on_disk(folder)
    assert counts_after - counts == 300
    assert len(paths_after - paths) <= 2  # at most one new ticket per worker
    assert size_after - size < 100_000  # 300 tickets of ~13 KB each before
