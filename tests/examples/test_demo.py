"""The demo that `make demo` runs: gunicorn with examples/gunicorn.conf.py serves a page."""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import scalekit
from tests.servers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")


@pytest.fixture
def demo_url():
    port = free_port()
    env = dict(os.environ, SCALEKIT_BIND=f"127.0.0.1:{port}", SCALEKIT_WORKERS="2")
    process = subprocess.Popen(
        [GUNICORN, "-c", "examples/gunicorn.conf.py"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode(errors="replace")
                    pytest.fail(f"the demo did not start:\n{output[-2000:]}", pytrace=False)
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)


def test_demo_page_names_the_scalekit_version(demo_url):
    with urllib.request.urlopen(demo_url + "/", timeout=5) as response:
        body = response.read().decode()
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert f"Served by scalekit {scalekit.__version__}" in body


def test_demo_unknown_path_is_404(demo_url):
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(demo_url + "/nope", timeout=5)
    assert caught.value.code == 404
