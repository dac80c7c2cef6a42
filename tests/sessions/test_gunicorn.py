"""Stores opened before gunicorn forks (``--preload``) still give each worker its own
connections: many clients at once across several workers, and no session is mixed up."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from tests.gunicorn import gunicorn
from tests.sessions.conftest import store_url_for


@pytest.fixture(params=["file", "sqlite", "postgres", "memcache2", "redis"])
def served(request, tmp_path, app_name):
    env = {"SCALEKIT_TEST_STORE": store_url_for(request.param, request, tmp_path),
           "SCALEKIT_TEST_APP": app_name}  # fmt: skip
    # sync workers (one request at a time) and a request that takes 10 ms: while one worker
    # serves, the next connection must go to another, so several workers always serve (with
    # threads, one fast worker could take every connection and prove nothing about the rest)
    env["SCALEKIT_TEST_DELAY"] = "0.01"
    with gunicorn("tests.sessions.gunicorn_app:application", env, threads=1) as port:
        yield port


def session_counts(port, requests):
    """One browser: ``requests`` sequential requests on fresh connections, cookie kept."""
    cookie, seen = None, []
    for _ in range(requests):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        cookie = (response.getheader("Set-Cookie") or cookie or "").split(";")[0] or cookie
        seen.append(json.loads(body))
        connection.close()
    return seen


def test_workers_forked_after_preload_share_no_connections(served):
    results, errors = {}, []

    def browse(user):
        try:
            results[user] = session_counts(served, 20)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=browse, args=(user,)) for user in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    for seen in results.values():
        assert [item["n"] for item in seen] == list(range(1, 21))  # nobody's count mixed up
    assert len({item["pid"] for seen in results.values() for item in seen}) >= 2
