"""Stores opened before gunicorn forks (``--preload``) still give each worker its own
connections: many clients at once across several workers, and no session is mixed up."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.servers import free_port
from tests.sessions.conftest import store_url_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")


@pytest.fixture(params=["file", "sqlite", "postgres", "memcache2", "redis"])
def served(request, tmp_path, app_name):
    port = free_port()
    env = dict(os.environ, SCALEKIT_TEST_STORE=store_url_for(request.param, request, tmp_path),
               SCALEKIT_TEST_APP=app_name)  # fmt: skip
    process = subprocess.Popen(
        [GUNICORN, "--preload", "--workers", "3", "--threads", "2", "--bind",
         f"127.0.0.1:{port}", "tests.sessions.gunicorn_app:application"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(process.stdout.read().decode()[-3000:], pytrace=False)
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(20)


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
        except Exception as exc:  # reported by the assertion below
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
