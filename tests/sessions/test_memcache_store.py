"""The memcached store on real memcached servers: placement, dead nodes, limits, bad data."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import tempfile
import time
from collections.abc import Iterator

import pytest
from pymemcache.client.base import Client

from scalekit.core.checks import MAX_TTL
from scalekit.core.errors import ConfigError, SerializationError, StoreUnavailable
from scalekit.sessions.stores import ANY, open_store
from tests.servers import MemcachedServer

SID = "AbCdEfGhIjKlMnOpQrStUvWx"


def new_sid() -> str:
    return secrets.token_urlsafe(18)


@contextlib.contextmanager
def direct(server: MemcachedServer) -> Iterator[Client]:
    """A plain pymemcache client on one node, to look at what the store really wrote."""
    client = Client(("127.0.0.1", server.port), connect_timeout=2, timeout=2, default_noreply=False)
    try:
        yield client
    finally:
        client.close()


def record_key(app: str, sid: str) -> bytes:
    return f"scalekit:s:{app}:{sid}".encode()


def touch_key(app: str, sid: str) -> bytes:
    return f"scalekit:t:{app}:{sid}".encode()


def holder(servers, app: str, sid: str) -> MemcachedServer | None:
    """The server that holds the record of ``sid``, or None."""
    found = None
    for server in servers:
        with direct(server) as client:
            if client.get(record_key(app, sid)) is not None:
                assert found is None, f"{sid} is stored on two nodes"
                found = server
    return found


def session_on(store, servers, app: str, wanted: MemcachedServer) -> str:
    """Create sessions until one lands on ``wanted``; return its id."""
    while True:
        sid = new_sid()
        assert store.save(sid, b"data of " + sid.encode(), 60, None)
        if holder(servers, app, sid) is wanted:
            return sid


class MemcachedOnPort(MemcachedServer):
    """memcached started again on the port of one that stopped: a node coming back."""

    def __init__(self, port: int):
        super().__init__()
        self.fixed_port = port

    def start(self) -> MemcachedOnPort:
        self.workdir = tempfile.mkdtemp(prefix="scalekit-memcached-")
        self.port = self.fixed_port
        self._launch()
        self._wait_until_answering()
        return self


@pytest.fixture
def extra_memcached() -> Iterator[MemcachedServer]:
    """A memcached of this test's own, which the test may stop."""
    with MemcachedServer().running() as server:
        yield server


def timed(call) -> tuple[float, BaseException | None]:
    """Run ``call``; return how long it took and what it raised (StoreUnavailable only)."""
    started = time.monotonic()
    try:
        call()
    except StoreUnavailable as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_sessions_spread_over_the_nodes_each_with_its_keys_on_one_node(
    memcached_servers, memcache_url, app_name
):
    store = open_store(memcache_url, app_name=app_name)
    sids = [new_sid() for _ in range(40)]
    try:
        for sid in sids:
            assert store.save(sid, b"payload " + sid.encode(), 60, None)
            store.touch(sid, 60)
        counts = {}
        for server in memcached_servers:
            with direct(server) as client:
                records = client.get_many([record_key(app_name, sid) for sid in sids])
                touches = client.get_many([touch_key(app_name, sid) for sid in sids])
            counts[server.port] = len(records)
            # the touch time sits next to its record, so one request loads both
            assert {key.replace(b":t:", b":s:", 1) for key in touches} == set(records)
            for key, value in records.items():
                assert value.endswith(b"payload " + key.rsplit(b":", 1)[1])
        assert sum(counts.values()) == len(sids)
        assert all(count > 0 for count in counts.values()), counts
    finally:
        store.close()


def test_touch_sends_no_payload_and_keeps_the_version(memcached_servers, app_name):
    server = memcached_servers[0]
    store = open_store("memcache://" + server.address, app_name=app_name)
    try:
        payload = bytes(range(256)) * 512
        store.save(SID, payload, 60, None)
        with direct(server) as client:
            stored, version = client.gets(record_key(app_name, SID))
            before = int(client.stats()[b"bytes_read"])
            store.touch(SID, 120)
            received = int(client.stats()[b"bytes_read"]) - before
            assert client.gets(record_key(app_name, SID)) == (stored, version)
        assert received < 1024  # the touch commands, not the 128 KiB payload
        assert store.load(SID).data == payload
    finally:
        store.close()


def test_a_stopped_node_fails_fast_then_its_sessions_move_to_the_live_node(
    memcached_servers, extra_memcached, app_name
):
    live, doomed = memcached_servers[0], extra_memcached
    url = (
        f"memcache://{live.address},{doomed.address}?connect_timeout=0.5&timeout=0.5"
        "&retry_attempts=1&retry_timeout=0.5&dead_timeout=60"
    )
    store = open_store(url, app_name=app_name)
    try:
        on_live = [session_on(store, (live, doomed), app_name, live) for _ in range(2)]
        on_doomed = [session_on(store, (live, doomed), app_name, doomed) for _ in range(2)]

        stale = store.load(on_doomed[0])
        doomed.stop()
        # the first call that needs the stopped node fails within the timeouts
        took, error = timed(lambda: store.load(on_doomed[0]))
        assert isinstance(error, StoreUnavailable) and took < 1.5
        assert doomed.address in str(error) and live.address in str(error)  # names the URL
        # until retry_timeout passes, calls for its sessions fail without trying it
        took, error = timed(lambda: store.save(on_doomed[1], b"x", 60, ANY))
        assert isinstance(error, StoreUnavailable) and took < 0.2
        # sessions on the live node are not affected
        assert store.load(on_live[0]).data == b"data of " + on_live[0].encode()
        assert store.save(on_live[1], b"still saved", 60, ANY)
        # its one retry fails too: it leaves the ring
        time.sleep(0.6)
        took, error = timed(lambda: store.load(on_doomed[0]))
        assert isinstance(error, StoreUnavailable) and took < 1.5
        # from now on its sessions go to the live node, without waiting for the dead one
        started = time.monotonic()
        assert store.load(on_doomed[0]) is None  # lost with the node
        assert store.save(on_doomed[0], b"started again", 60, None)
        assert store.load(on_doomed[0]).data == b"started again"
        assert time.monotonic() - started < 0.2
        assert holder((live,), app_name, on_doomed[0]) is live
        # a version loaded from the dead node never matches there (CAS counts per server)
        assert store.save(on_doomed[0], b"stale write", 60, stale.version) is False
        assert store.load(on_doomed[0]).data == b"started again"
        assert store.load(on_live[1]).data == b"still saved"
    finally:
        store.close()


def test_a_hung_node_costs_one_timeout_then_is_skipped(
    memcached_servers, extra_memcached, app_name
):
    live, hung = memcached_servers[0], extra_memcached
    url = f"memcache://{live.address},{hung.address}?timeout=0.5&retry_timeout=5"
    store = open_store(url, app_name=app_name)
    try:
        on_live = session_on(store, (live, hung), app_name, live)
        on_hung = session_on(store, (live, hung), app_name, hung)
        hung.freeze()
        took, error = timed(lambda: store.load(on_hung))
        assert isinstance(error, StoreUnavailable) and 0.4 < took < 1.5
        assert "timed out" in str(error)
        for call in (
            lambda: store.load(on_hung),
            lambda: store.touch(on_hung, 60),
            lambda: store.try_lease(on_hung, "owner", 5),
        ):
            took, error = timed(call)
            assert isinstance(error, StoreUnavailable) and took < 0.1
        assert store.load(on_live).data == b"data of " + on_live.encode()
    finally:
        hung.thaw()
        store.close()


def test_a_dead_node_rejoins_after_dead_timeout(memcached_servers, extra_memcached, app_name):
    live, flaky = memcached_servers[0], extra_memcached
    url = f"memcache://{live.address},{flaky.address}?retry_attempts=0&dead_timeout=1"
    store = open_store(url, app_name=app_name)
    revived = MemcachedOnPort(flaky.port)
    try:
        sid = session_on(store, (live, flaky), app_name, flaky)
        flaky.stop()
        with pytest.raises(StoreUnavailable):
            store.load(sid)
        assert store.save(sid, b"on the live node", 60, None)  # rehashed
        with revived.running():
            time.sleep(1.2)
            assert store.load(sid) is None  # back on its own node, which restarted empty
            assert store.save(sid, b"home again", 60, None)
            assert holder((revived,), app_name, sid) is revived
    finally:
        store.close()


def test_a_node_back_from_the_dead_never_undoes_a_sign_out_or_a_renewal(
    memcached_servers, extra_memcached, app_name
):
    live, flaky = memcached_servers[0], extra_memcached
    url = f"memcache://{live.address},{flaky.address}?timeout=0.5&retry_attempts=0&dead_timeout=1"
    store = open_store(url, app_name=app_name)
    try:
        signed_out = session_on(store, (live, flaky), app_name, flaky)
        renewed = session_on(store, (live, flaky), app_name, flaky)
        with flaky.frozen():  # the node stalls (SIGSTOP): it keeps its copies
            with pytest.raises(StoreUnavailable):
                store.load(signed_out)  # it times out and leaves the ring
            store.delete(signed_out)  # on the live node, where there is nothing
            assert store.save(renewed, b"renewed", 60, ANY)  # on the live node
        time.sleep(1.2)  # the node answers again and dead_timeout has passed: back home
        assert store.load(signed_out) is None
        assert store.load(renewed) is None  # the renewal is lost (signed out), not undone
        assert store.save(renewed, b"signed in again", 60, None)
        assert store.load(renewed).data == b"signed in again"
        assert holder((flaky,), app_name, renewed) is flaky  # home again
    finally:
        store.close()


def test_the_only_node_is_retried_after_retry_timeout(extra_memcached, app_name):
    url = f"memcache://{extra_memcached.address}?retry_attempts=0&retry_timeout=0.5"
    store = open_store(url, app_name=app_name)
    revived = MemcachedOnPort(extra_memcached.port)
    try:
        store.save(SID, b"x", 60, None)
        extra_memcached.stop()
        for _ in range(2):
            with pytest.raises(StoreUnavailable, match=re.escape(url)):
                store.load(SID)
        took, error = timed(lambda: store.load(SID))
        assert isinstance(error, StoreUnavailable) and took < 0.2
        with revived.running():
            time.sleep(0.6)
            assert store.load(SID) is None  # it restarted empty, but it answers again
            assert store.save(SID, b"y", 60, None)
    finally:
        store.close()


def test_ttls_are_relative_and_at_most_30_days(memcache_url, app_name):
    store = open_store(memcache_url, app_name=app_name)
    try:
        for call in (
            lambda: store.save(SID, b"x", MAX_TTL + 1, None),
            lambda: store.touch(SID, MAX_TTL + 1),
            lambda: store.try_lease(SID, "owner", MAX_TTL + 1),
        ):
            with pytest.raises(ConfigError, match="30 days"):
                call()
        assert store.load(SID) is None
        # exactly 30 days is still relative (more would be read as a date in 1970)
        assert store.save(SID, b"month", MAX_TTL, None)
        store.touch(SID, MAX_TTL)
        assert store.load(SID).data == b"month"
        assert store.try_lease(SID, "owner", MAX_TTL)
        assert store.try_lease(SID, "other", 1) is False
    finally:
        store.close()


def test_a_lock_holds_at_least_its_ttl_and_at_least_a_second(memcache_url, app_name):
    # memcached's clock ticks once a second: take locks at five points of that second
    store = open_store(memcache_url, app_name=app_name)
    try:
        sids, taken = [new_sid() for _ in range(5)], []
        start = time.monotonic()
        for step, sid in enumerate(sids):
            time.sleep(max(0.0, start + 0.2 * step - time.monotonic()))
            assert store.try_lease(sid, "quick", 0.2)
            taken.append(time.monotonic())
        for sid, at in zip(sids, taken, strict=True):
            time.sleep(max(0.0, at + 0.95 - time.monotonic()))
            assert store.try_lease(sid, "other", 5) is False, "the lock lapsed within a second"
        time.sleep(max(0.0, taken[-1] + 2.2 - time.monotonic()))
        assert all(store.try_lease(sid, "other", 5) for sid in sids)
    finally:
        store.close()


def test_unlock_after_expiry_leaves_the_next_holders_lock(memcache_url, app_name):
    store = open_store(memcache_url, app_name=app_name)
    try:
        assert store.try_lease(SID, "slow", 1)
        time.sleep(2.2)
        assert store.try_lease(SID, "next", 10)
        store.release_lease(SID, "slow")  # too late: "next" holds it now
        assert store.try_lease(SID, "third", 10) is False
        store.release_lease(SID, "next")
        assert store.try_lease(SID, "third", 10) is True
    finally:
        store.close()


def test_a_corrupt_record_loads_as_missing_with_a_warning(memcached_servers, app_name, caplog):
    server = memcached_servers[0]
    store = open_store("memcache://" + server.address, app_name=app_name)
    try:
        with direct(server) as client:
            client.set(record_key(app_name, SID), b"\x80\x04 not ours", 60)
        with caplog.at_level(logging.WARNING, logger="scalekit.sessions"):
            assert store.load(SID) is None
        assert "corrupt record" in caplog.text and SID[:6] in caplog.text
        assert SID not in caplog.text  # session ids are secrets: logs carry a prefix only
        # the bad value is left in place (not silently overwritten by a create)
        assert store.save(SID, b"new", 60, None) is False
    finally:
        store.close()


def test_a_corrupt_touch_time_falls_back_to_the_save_time(memcached_servers, app_name, caplog):
    server = memcached_servers[0]
    store = open_store("memcache://" + server.address, app_name=app_name)
    try:
        store.save(SID, b"data", 60, None)
        saved = store.load(SID)
        with direct(server) as client:
            client.set(touch_key(app_name, SID), b"garbage", 60)
        with caplog.at_level(logging.WARNING, logger="scalekit.sessions"):
            record = store.load(SID)
        assert record == saved
        assert "corrupt touch time" in caplog.text
    finally:
        store.close()


def test_a_value_over_the_item_limit_is_refused_and_the_old_one_kept(memcache_url, app_name):
    store = open_store(memcache_url, app_name=app_name)
    try:
        store.save(SID, b"small", 60, None)
        for expected in (ANY, store.load(SID).version, None):
            with pytest.raises(SerializationError, match=r"over the [\d,]+-byte limit"):
                store.save(SID, b"x" * (1024 * 1024), 60, expected)
        assert store.load(SID).data == b"small"
        biggest = store.max_value_size - 16  # the header takes 16 bytes
        assert store.save(SID, b"y" * biggest, 60, ANY)
        assert len(store.load(SID).data) == biggest
    finally:
        store.close()


def test_options_come_from_the_url_and_keywords(memcache_url, app_name):
    url = memcache_url + "?connect_timeout=0.25&timeout=0.5&retry_attempts=0&dead_timeout=5"
    store = open_store(url, app_name=app_name, timeout=0.75, max_pool_size=4)
    try:
        assert store.kind == "memcache"
        assert (store.connect_timeout, store.timeout, store.retry_attempts) == (0.25, 0.75, 0)
        assert (store.dead_timeout, store.max_pool_size, store.retry_timeout) == (5.0, 4, 1.0)
        assert memcache_url in repr(store)
        assert store.save(SID, b"x", 60, None)
    finally:
        store.close()


@pytest.mark.parametrize(
    "query, keywords",
    [("?timeout=soon", {}), ("?timeout=-1", {}), ("", {"connect_timeout": 0}),
     ("?max_pool_size=0", {}), ("", {"retry_attempts": -1}), ("", {"dead_timeout": "1"})],
)  # fmt: skip
def test_bad_option_values_are_config_errors(memcache_url, app_name, query, keywords):
    with pytest.raises(ConfigError, match="memcache://"):
        open_store(memcache_url + query, app_name=app_name, **keywords)


def test_a_version_from_elsewhere_is_refused(memcache_url, app_name):
    store = open_store(memcache_url, app_name=app_name)
    try:
        store.save(SID, b"x", 60, None)
        with pytest.raises(ValueError, match="not one this store"):
            store.save(SID, b"y", 60, "some-redis-version")
        assert store.load(SID).data == b"x"
    finally:
        store.close()


def test_a_server_that_is_not_memcached_is_store_unavailable(redis_server, app_name):
    # (touch and delete cannot tell: pymemcache reads any other answer as "not found")
    store = open_store(f"memcache://127.0.0.1:{redis_server.port}", app_name=app_name)
    try:
        for call in (
            lambda: store.load(SID),
            lambda: store.save(SID, b"x", 60, None),
            lambda: store.try_lease(SID, "owner", 5),
            lambda: store.release_lease(SID, "owner"),
        ):
            with pytest.raises(StoreUnavailable, match=f"memcached 127.0.0.1:{redis_server.port}"):
                call()
    finally:
        store.close()
