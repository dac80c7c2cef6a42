"""A real gunicorn with several workers: one flip of the flag reaches every worker within
the cache interval, for a Redis flag and for a file flag."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from scalekit.maintenance import State
from tests.servers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
WORKERS, CACHE = 3, 0.5


@pytest.fixture
def served(flag_url, app_name):
    port = free_port()
    env = dict(os.environ, SCALEKIT_MAINTENANCE_FLAG=flag_url, SCALEKIT_TEST_APP=app_name,
               SCALEKIT_TEST_CACHE=str(CACHE))  # fmt: skip
    process = subprocess.Popen(
        [GUNICORN, "--preload", "--workers", str(WORKERS), "--threads", "2", "--bind",
         f"127.0.0.1:{port}", "tests.maintenance.gunicorn_app:application"],
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
