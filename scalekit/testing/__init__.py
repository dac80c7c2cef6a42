"""Conformance suites a store or backend runs to show it keeps scalekit's protocol.

The top floor beside ``cli``: it may import the pieces it tests, and it imports pytest, so
only tests import it, never an application. As dogpile.cache ships ``dogpile.testing``, a
third-party store or backend runs the very suite scalekit's own run, by subclassing it in
a test module and giving one fixture:

- :mod:`scalekit.testing.sessions`: ``SessionStoreSuite`` (fixture ``make_store``), and
  ``SharedSessionStoreSuite`` for a store other processes reach;
- :mod:`scalekit.testing.cache`: ``CacheBackendSuite`` (fixture ``make_backend``), and
  ``SharedCacheBackendSuite`` for a backend other processes see;
- :mod:`scalekit.testing.tasks`: ``TaskEngineSuite`` (fixture ``make_engine``), and
  ``SharedTaskEngineSuite`` for an engine other processes reach;
- :mod:`scalekit.testing.uploads`: ``UploadStoreSuite`` (fixture ``make_store``), and
  ``SharedUploadStoreSuite`` for a store other processes reach.

The smallest third-party session store running the suite::

    import pytest
    from scalekit.testing.sessions import SessionStoreSuite
    from mystore import MyStore  # a scalekit.sessions.stores.SessionStore

    class TestMyStore(SessionStoreSuite):
        @pytest.fixture
        def make_store(self):
            return MyStore  # make_store(app_name, **options) opens one as your users do
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable

import pytest

# failed assertions in the suites show their operands, as in a test module
pytest.register_assert_rewrite(
    "scalekit.testing.cache",
    "scalekit.testing.sessions",
    "scalekit.testing.tasks",
    "scalekit.testing.uploads",
)

__all__ = ["fresh_app_name", "run_in_children", "run_threads"]


def fresh_app_name() -> str:
    """A new app name, so tests sharing a server never see each other's data."""
    return "t" + uuid.uuid4().hex[:12]


def run_in_children(count: int, work: Callable[[int], object]) -> list[int]:
    """Fork ``count`` children that each run ``work(index)``; their exit codes (0 when
    ``work`` returned, 1 when it raised)."""
    pids = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                work(index)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def run_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(index)`` in ``count`` threads; re-raise the first error one raised."""
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    if errors:
        raise errors[0]
