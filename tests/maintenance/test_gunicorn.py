"""A real gunicorn with several workers: one flip of the flag reaches every worker within
the cache interval, for a Redis flag and for a file flag."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from scalekit.maintenance import State
from tests.gunicorn import gunicorn

WORKERS, CACHE = 3, 0.5


@pytest.fixture
def served(flag_url, app_name):
    env = {"SCALEKIT_MAINTENANCE_FLAG": flag_url, "SCALEKIT_TEST_APP": app_name,
           "SCALEKIT_TEST_CACHE": str(CACHE)}  # fmt: skip
    with gunicorn("tests.maintenance.gunicorn_app:application", env, workers=WORKERS) as port:
        yield port


def request(port, method="GET"):
    """One request on a fresh connection: (status, the JSON body or None)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, "/orders", body=b"" if method == "POST" else None,
                           headers={"Accept": "application/json"})  # fmt: skip
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if response.status == 200 else body
    finally:
        connection.close()


def burst(port, n=60, method="GET"):
    """``n`` requests from 6 threads at once, so every worker gets some."""
    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(lambda _: request(port, method), range(n)))


def test_one_flip_reaches_every_worker_within_the_cache_interval(served, flag):
    pids: set[int] = set()
    deadline = time.monotonic() + 15
    while len(pids) < WORKERS and time.monotonic() < deadline:
        results = burst(served)
        assert {status for status, _ in results} == {200}
        assert {body["mode"] for _, body in results} == {None}
        pids |= {body["pid"] for _, body in results}
    assert len(pids) == WORKERS, f"only reached workers {pids}"

    for state, expected in ((State("read-only", "Failover"), "read-only"), (None, None)):
        if state is None:
            flag.clear()
        else:
            flag.write(state)
        flipped = time.monotonic()
        time.sleep(CACHE + 0.1)  # the cache interval, and a little for the request to run
        seen: set[int] = set()
        while seen != pids and time.monotonic() - flipped < 10:
            results = burst(served)
            assert {body["mode"] for _, body in results} == {expected}, results
            seen |= {body["pid"] for _, body in results}
        assert seen == pids  # every worker answered, and all with the new state
        posts = {status for status, _ in burst(served, 12, "POST")}
        assert posts == ({503} if expected else {200})


def test_a_script_name_header_cannot_send_the_redirect_off_site(served, flag):
    """gunicorn turns a ``SCRIPT_NAME`` header (from an allowed forwarder: loopback by
    default) into the environ's SCRIPT_NAME: the read-only redirect must stay on the site."""
    flag.write(State("read-only"))
    time.sleep(CACHE + 0.1)
    connection = http.client.HTTPConnection("127.0.0.1", served, timeout=10)
    try:
        connection.request("POST", "//evil.example/orders", body=b"a=1", headers={
            "SCRIPT_NAME": "//evil.example", "Accept": "text/html",
            "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 303
    assert response.getheader("Location") == "/maintenance"
