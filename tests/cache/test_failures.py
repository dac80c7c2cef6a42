"""A shared backend's server stops: the failure policy applies, in bounded time.

Each test runs its own server, so stopping it disturbs no other test. SIGSTOP freezes
redis-server or memcached (connections open, nothing answers: clients time out, the worst
kind of outage); afterwards the server resumes and caching works again.
"""

from __future__ import annotations

import contextlib
import logging
import time

import pytest

from scalekit.cache import Cache, CacheModel, CacheUnavailable
from tests.servers import MemcachedServer, RedisServer

# short timeouts keep the tests fast; the defaults (1 s) bound an outage the same way
OPTIONS = {
    "redis": "?socket_timeout=0.3&socket_connect_timeout=0.3",
    "memcache": "?timeout=0.3&connect_timeout=0.3&retry_timeout=0.2&dead_timeout=0.5",
}
BOUND = 2.0  # seconds any one call may take while the server is down


class Outage:
    """A private server and a way to freeze it for a while."""

    def __init__(self, kind: str):
        self.kind = kind
        self.server = (RedisServer if kind == "redis" else MemcachedServer)().start()

    @property
    def url(self) -> str:
        base = self.server.url if self.kind == "redis" else f"memcache://{self.server.address}"
        return base + OPTIONS[self.kind]

    @contextlib.contextmanager
    def down(self):
        self.server.freeze()
        try:
            yield
        finally:
            self.server.thaw()
            time.sleep(0.3)  # memcache: past retry_timeout, the node is tried again


@pytest.fixture(params=["memcache", "redis"])
def outage(request):
    running = Outage(request.param)
    try:
        yield running
    finally:
        running.server.stop()


def open_model(outage: Outage, app_name: str, **options) -> CacheModel:
    return Cache(app_name, **options).model(outage.url)


def timed(call):
    started = time.monotonic()
    result = call()
    elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"took {elapsed:.2f}s"
    return result


def policy_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "scalekit.cache" and "cannot" in r.getMessage()]  # fmt: skip


def test_fail_open_computes_and_returns_without_raising(outage, app_name, caplog):
    model = open_model(outage, app_name, log_interval=60)
    assert model("k", lambda: "cached", 60) == "cached"
    caplog.set_level(logging.WARNING, logger="scalekit.cache")
    calls = []
    with outage.down():
        for _ in range(2):
            assert timed(lambda: model("k", lambda: calls.append(1) or "fresh", 60)) == "fresh"
        assert timed(lambda: model.get("k", "default")) == "default"
        timed(lambda: model.set("k2", "v", 60))
        assert timed(lambda: model.delete("k")) is False
        assert timed(lambda: model.clear()) == 0
        with pytest.raises(CacheUnavailable):  # no value to invent: raises under both policies
            timed(lambda: model.increment("n"))
        assert model.stats()["errors"] >= 6
    assert calls == [1, 1]
    assert len(policy_logs(caplog)) == 1  # logged once per log_interval
    assert "error" not in model.stats()["server"]  # the server answers stats again
    # the server is back: the value stored before is there, and caching works again
    assert model("k", lambda: "again", 60) == "cached"
    assert model("new", lambda: "v1", 60) == "v1"
    assert model("new", lambda: "v2", 60) == "v1"
    assert model.stats()["hits"] >= 2


def test_fail_closed_raises_cache_unavailable(outage, app_name):
    model = open_model(outage, app_name, on_error="fail_closed")
    model.set("k", "cached", 60)
    calls = []
    with outage.down():
        with pytest.raises(CacheUnavailable, match=outage.kind) as raised:
            timed(lambda: model("k", lambda: calls.append(1) or "fresh", 60))
        assert str(outage.server.port) in str(raised.value)  # names the server
        with pytest.raises(CacheUnavailable):
            timed(lambda: model.get("k"))
        with pytest.raises(CacheUnavailable):
            timed(lambda: model.set("k", "v", 60))
    assert calls == []
    assert model("k", lambda: "fresh", 60) == "cached"


def test_a_failure_logs_again_after_the_interval(outage, app_name, caplog):
    model = open_model(outage, app_name, log_interval=0.5)
    caplog.set_level(logging.WARNING, logger="scalekit.cache")
    with outage.down():
        model.get("a")
        model.get("b")
        time.sleep(0.6)
        model.get("c")
    assert len(policy_logs(caplog)) == 2


@pytest.mark.parametrize("verdict", ["CorruptData", "CacheUnavailable"])
def test_a_commands_own_error_does_not_mark_a_memcached_node_failed(
    memcache_url, app_name, verdict
):
    """A scalekit error raised by a command on a reply (a corrupt entry, a race lost) is
    the command's verdict: it reaches the caller as it is, and the node keeps serving."""
    from scalekit.cache.backends import open_backend
    from scalekit.core import errors

    error = getattr(errors, verdict)
    one_node = memcache_url.split(",")[0]  # every key on it
    backend = open_backend(one_node, app_name, retry_attempts=1, retry_timeout=60)

    def judged(conn):
        conn.get(b"scalekit-probe")  # a real round trip, answered
        raise error("this reply is not an entry")

    for _ in range(5):  # more failures than would take the node out for retry_timeout
        with pytest.raises(error, match=r"^this reply is not an entry$"):
            backend._run("read an entry", b"probe", judged)
    backend.set("after", "still served", 60)
    assert backend.get("after").value == "still served"
    backend.close()
