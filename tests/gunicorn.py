"""A real gunicorn serving a test app on a free loopback port, for tests of several workers."""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.servers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")


@contextlib.contextmanager
def gunicorn(
    app: str,
    env: dict[str, str],
    *,
    workers: int = 3,
    threads: int = 2,
    preload: bool = True,
    worker_class: str | None = None,
    timeout: float | None = None,
) -> Iterator[int]:
    """Run ``app`` (``module:callable``) with ``env`` added to the environment; yields the
    port once it accepts connections, fails the test with gunicorn's output if it cannot.
    ``worker_class`` and ``timeout``: gunicorn's ``--worker-class`` and ``--timeout`` (its
    defaults when None: a sync worker, made a gthread one by ``threads`` > 1, and 30 s)."""
    port = free_port()
    options = [*(["--worker-class", worker_class] if worker_class else []),
               *(["--timeout", f"{timeout:g}"] if timeout is not None else [])]  # fmt: skip
    command = [GUNICORN, *(["--preload"] if preload else []), "--workers", str(workers),
               "--threads", str(threads), *options, "--bind", f"127.0.0.1:{port}", app]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
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
