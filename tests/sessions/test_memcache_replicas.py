"""The memcached session store with ``replicas=2`` on three real memcached servers of its own:
placement, the conformance suite, a killed node, a node back empty, a frozen node, and
compare-and-set across app servers while a node flaps."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterator

import pytest

from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.sessions.stores import ANY, open_store
from scalekit.sessions.stores._memcache_records import (
    RECORD,
    RECORD_MAGIC,
    REPLICATED,
    TOUCH,
    TOUCH_MAGIC,
)
from scalekit.testing.sessions import SharedSessionStoreSuite
from tests.servers import MemcachedServer, free_port
from tests.sessions.test_memcache_store import (
    MemcachedOnPort,
    direct,
    new_sid,
    record_key,
    touch_key,
)

SID = "AbCdEfGhIjKlMnOpQrStUvWx"


@contextlib.contextmanager
def three_nodes() -> Iterator[list[MemcachedServer]]:
    """Three memcached nodes; the body may kill, freeze or restart them (a node it puts in
    the list in place of another is stopped too). Stopped with SIGKILL: their data is
    thrown away, and memcached takes up to a second to stop politely."""
    nodes: list[MemcachedServer] = []
    try:
        for _ in range(3):
            nodes.append(MemcachedServer().start())
        yield nodes
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
                node.process.wait()
            node.stop()


@pytest.fixture(scope="module")
def shared_nodes() -> Iterator[list[MemcachedServer]]:
    """Three memcached nodes for the tests that stop none."""
    with three_nodes() as nodes:
        yield nodes


@pytest.fixture
def nodes() -> Iterator[list[MemcachedServer]]:
    """Three memcached nodes of this test's own, which it may kill, freeze or restart."""
    with three_nodes() as started:
        yield started


def url_of(nodes, **options) -> str:
    query = "&".join(f"{name}={value}" for name, value in options.items())
    return "memcache://" + ",".join(node.address for node in nodes) + (query and "?" + query)


@contextlib.contextmanager
def opened(url: str, app_name: str, **options):
    store = open_store(url, app_name=app_name, **options)
    try:
        yield store
    finally:
        store.close()


def ranked(nodes, key: bytes) -> list[MemcachedServer]:
    """``nodes`` by their rendezvous (highest random weight) score for ``key``, best first."""

    def score(node):
        digest = hashlib.blake2b(node.address.encode() + b"\0", digest_size=8)
        digest.update(key)
        return int.from_bytes(digest.digest(), "big")

    return sorted(nodes, key=score, reverse=True)


def stored_on(node, app_name: str, sid: str) -> bytes | None:
    with direct(node) as client:
        return client.get(record_key(app_name, sid))


def sessions_led_by(store, nodes, app_name: str, leader, count: int) -> list[str]:
    """``count`` new sessions whose first replica is ``leader``, saved with their id."""
    sids = []
    while len(sids) < count:
        sid = new_sid()
        if ranked(nodes, record_key(app_name, sid))[0] is leader:
            assert store.save(sid, sid.encode(), 60, None)
            sids.append(sid)
    return sids


class TestReplicatedStore(SharedSessionStoreSuite):
    """The session store protocol, with every session on two of the three nodes."""

    @pytest.fixture
    def make_store(self, shared_nodes):
        url = url_of(shared_nodes, replicas=2)
        return lambda app_name, **options: open_store(url, app_name=app_name, **options)

    @pytest.fixture
    def make_unreachable_store(self):
        url = f"memcache://127.0.0.1:{free_port()},127.0.0.1:{free_port()}?replicas=2"
        return lambda app_name: open_store(url, app_name=app_name)


def test_the_replicas_option_comes_from_the_url_or_a_keyword(shared_nodes, app_name):
    url = url_of(shared_nodes)
    for query, keywords, replicas in [
        ("", {}, 1), ("?replicas=2", {}, 2), ("?replicas=3", {}, 3),
        ("?replicas=3", {"replicas": 2}, 2),
    ]:  # fmt: skip
        with opened(url + query, app_name, **keywords) as store:
            assert store.replicas == replicas
    for query, keywords in [
        ("?replicas=0", {}), ("?replicas=4", {}), ("?replicas=two", {}), ("", {"replicas": 2.0}),
        ("", {"replicas": True}), ("", {"replicas": -1}), ("", {"replicas": "2"}),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match="replicas"):
            open_store(url + query, app_name=app_name, **keywords)
    with pytest.raises(ConfigError, match=r"from 1 to the number of servers \(1\)"):
        open_store(url_of(shared_nodes[:1], replicas=2), app_name=app_name)


def test_each_session_is_on_its_two_top_rendezvous_nodes(shared_nodes, app_name):
    sids = [new_sid() for _ in range(30)]
    firsts = set()
    with opened(url_of(shared_nodes, replicas=2), app_name) as store:
        for sid in sids:
            assert store.save(sid, b"data of " + sid.encode(), 60, None)
            store.touch(sid, 60)
            store.save(sid, b"again " + sid.encode(), 60, store.load(sid).version)
        for sid in sids:
            best = ranked(shared_nodes, record_key(app_name, sid))
            copies = [stored_on(node, app_name, sid) for node in best]
            assert copies[0] == copies[1] and copies[0].endswith(b"again " + sid.encode())
            assert copies[2] is None
            firsts.add(best[0].port)
        store.delete(sids[0])
        assert store.load(sids[0]) is None
    assert len(firsts) == 3  # every node is the first replica of some sessions


def test_replicas_can_be_turned_on_and_off_without_logging_anyone_out(shared_nodes, app_name):
    url = url_of(shared_nodes)
    with opened(url, app_name) as one, opened(url, app_name, replicas=2) as two:
        assert one.save(SID, b"v1", 60, None)
        loaded = two.load(SID)  # written without replicas: on the first replica
        assert loaded.data == b"v1"
        assert two.save(SID, b"v2", 60, loaded.version)  # now on both
        loaded = one.load(SID)
        assert loaded.data == b"v2"
        assert one.save(SID, b"v3", 60, loaded.version)  # on the first only: the other is behind
        loaded = two.load(SID)
        assert loaded.data == b"v3"
        assert two.save(SID, b"v4", 60, loaded.version)  # the replica behind does not win
        assert two.load(SID).data == one.load(SID).data == b"v4"
        for node in ranked(shared_nodes, record_key(app_name, SID))[:2]:
            assert stored_on(node, app_name, SID).endswith(b"v4")


def test_killing_any_node_logs_nobody_out_and_a_node_back_empty_is_repaired(nodes, app_name):
    url = url_of(nodes, replicas=2, retry_timeout=0.2)
    with opened(url, app_name) as store:
        latest = {sid: b"latest " + sid.encode() for sid in (new_sid() for _ in range(60))}
        for sid, data in latest.items():
            assert store.save(sid, b"first", 60, None)
            assert store.save(sid, data, 60, store.load(sid).version)
        for victim in range(3):
            nodes[victim].process.kill()  # SIGKILL: no goodbye
            nodes[victim].process.wait()
            for sid, data in latest.items():
                assert store.load(sid).data == data
            ours = [sid for sid in latest
                    if nodes[victim] in ranked(nodes, record_key(app_name, sid))[:2]]  # fmt: skip
            assert len(ours) > 20
            latest[ours[victim]] = b"saved while down " + ours[victim].encode()
            assert store.save(ours[victim], latest[ours[victim]], 60, ANY)
            nodes[victim] = MemcachedOnPort(nodes[victim].port).start()  # back, empty
            time.sleep(0.25)  # retry_timeout: the store tries it again
            for sid in ours:  # read from the other replica; copied back by a load where
                assert store.load(sid).data == latest[sid]  # it is first, else by a touch
                store.touch(sid, 60)  # (or the next save)
                assert stored_on(nodes[victim], app_name, sid).endswith(latest[sid])


def test_a_frozen_node_costs_at_most_one_timeout_per_request_and_loses_no_save(nodes, app_name):
    timeout = 0.5
    url = url_of(nodes, replicas=2, timeout=timeout, retry_timeout=1)
    with opened(url, app_name) as store, opened(url, app_name) as bystander:
        frozen = nodes[0]
        sids = sessions_led_by(store, nodes, app_name, frozen, 12)
        doomed, kept = sids[0], sids[1:]
        assert bystander.load(doomed).data == doomed.encode()  # its connection is open
        slowest, started = 0.0, time.monotonic()
        with frozen.frozen():
            for round_ in range(3):  # each request: load, then save what it changed
                for sid in kept:
                    began = time.monotonic()
                    record = store.load(sid)
                    assert store.save(sid, b"%d %s" % (round_, sid.encode()), 60, record.version)
                    slowest = max(slowest, time.monotonic() - began)
            store.delete(doomed)
            frozen_for = time.monotonic() - started
        # the node is back with the copies it had: this store deletes the ones it missed
        # before anything else there, and the other store then reads no stale copy either
        time.sleep(1.1)
        assert store.load(doomed) is None
        for sid in kept:
            assert store.load(sid).data == b"2 " + sid.encode()
            assert bystander.load(sid).data == b"2 " + sid.encode()
        assert bystander.load(doomed) is None
    print(f"frozen node: slowest request {slowest:.3f} s (timeout {timeout} s), "
          f"{len(kept) * 3} requests in {frozen_for:.2f} s")  # fmt: skip
    assert slowest < timeout + 0.4  # one timeout at most, then the node is skipped


def test_a_session_missing_on_one_replica_while_the_other_is_silent_is_unavailable(nodes, app_name):
    url = url_of(nodes, replicas=2, timeout=0.3, retry_timeout=0.2)
    with opened(url, app_name) as store:
        assert store.save(SID, b"kept", 60, None)
        version = store.load(SID).version
        first, second = ranked(nodes, record_key(app_name, SID))[:2]
        first.process.kill()
        first.process.wait()
        nodes[nodes.index(first)] = first = MemcachedOnPort(first.port).start()  # empty
        time.sleep(0.25)
        with second.frozen():  # "missing" from a node that lost it is no answer: not None
            with pytest.raises(StoreUnavailable, match="do not hold it"):
                store.load(SID)
            with pytest.raises(StoreUnavailable, match="do not hold it"):
                store.save(SID, b"lost?", 60, version)
        time.sleep(0.25)
        assert store.load(SID).data == b"kept"  # and copied back to the first replica
        assert stored_on(first, app_name, SID).endswith(b"kept")


@pytest.mark.parametrize("first", ["skipping", "seeing"])
def test_compare_and_set_conflicts_are_caught_when_stores_disagree_about_a_node(
    nodes, app_name, first
):
    url = url_of(nodes, replicas=2, timeout=0.3)
    with opened(url, app_name) as seeing, opened(url, app_name, retry_timeout=30) as skipping:
        leader = ranked(nodes, record_key(app_name, SID))[0]
        assert seeing.save(SID, b"v1", 60, None)
        base = seeing.load(SID).version
        assert skipping.load(SID).version == base
        with leader.frozen():  # only "skipping" notices: it leaves the node alone for 30 s
            assert skipping.load(SID).data == b"v1"  # after a timeout, from the other replica
        # "seeing" compares on the first replica, "skipping" on the second: one save wins
        stores = {"seeing": seeing, "skipping": skipping}
        winner, loser = first, ({"seeing", "skipping"} - {first}).pop()
        assert stores[winner].save(SID, winner.encode(), 60, base) is True
        assert stores[loser].save(SID, loser.encode(), 60, base) is False
        assert seeing.load(SID).data == skipping.load(SID).data == winner.encode()
        for node in ranked(nodes, record_key(app_name, SID))[:2]:
            assert stored_on(node, app_name, SID).endswith(winner.encode())


def test_concurrent_increments_from_two_stores_lose_nothing_while_a_node_flaps(nodes, app_name):
    url = url_of(nodes, replicas=2, timeout=0.2, retry_timeout=0.3)
    with opened(url, app_name) as first, opened(url, app_name) as second:
        assert first.save(SID, b"0", 60, None)
        leader = ranked(nodes, record_key(app_name, SID))[0]
        stop, done, unknown = threading.Event(), [0] * 4, [0] * 4

        def work(index: int, store) -> None:  # compare-and-set increments, retried
            while not stop.is_set():
                try:
                    record = store.load(SID)
                except StoreUnavailable:
                    continue
                try:
                    saved = store.save(SID, b"%d" % (int(record.data) + 1), 60, record.version)
                except StoreUnavailable:  # no replica answered in time (a busy machine):
                    unknown[index] += 1  # made or not, nobody can tell
                else:
                    done[index] += saved

        threads = [threading.Thread(target=work, args=(i, store))
                   for i, store in enumerate((first, second, first, second))]  # fmt: skip
        for thread in threads:
            thread.start()
        for _ in range(4):
            time.sleep(0.3)
            with leader.frozen():
                time.sleep(0.4)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        final = int(first.load(SID).data)
        print(f"increments while the node flapped: {done} (total {sum(done)}, "
              f"{sum(unknown)} unknown), counter {final}")  # fmt: skip
        assert int(second.load(SID).data) == final
        assert sum(done) <= final <= sum(done) + sum(unknown)  # no update lost or made twice


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_forged_record_with_impossible_numbers_is_corrupt_not_a_crash(
    shared_nodes, app_name, replicas, caplog
):
    """Someone who can write memcached forges a record whose save time is not a number or
    whose version cannot be followed: it loads as missing, with a warning, and a new
    session replaces it."""
    forged = [
        RECORD.pack(RECORD_MAGIC, math.nan, 60) + b"x",
        RECORD.pack(RECORD_MAGIC, -math.inf, 60) + b"x",
        REPLICATED.pack(b"SKs2", time.time(), 60, (1 << 64) - 1, 1, *[0] * 8) + b"x",
        REPLICATED.pack(b"SKs2", math.nan, 60, 1, 1, *[0] * 8) + b"x",
    ]
    with opened(url_of(shared_nodes, replicas=replicas), app_name) as store:
        for value in forged:
            sid = new_sid()
            for node in ranked(shared_nodes, record_key(app_name, sid))[:replicas]:
                with direct(node) as client:
                    client.set(record_key(app_name, sid), value)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="scalekit.sessions"):
                assert store.load(sid) is None
            assert "corrupt record" in caplog.text
            assert store.save(sid, b"new", 60, ANY)
            assert store.load(sid).data == b"new"


def test_a_forged_touch_time_that_is_not_finite_falls_back_to_the_save_time(
    shared_nodes, app_name, caplog
):
    """A touch time of infinity on the replica a load copies from: the copy made for the
    first replica uses the save time (no crash on an infinite expiry)."""
    with opened(url_of(shared_nodes, replicas=2), app_name) as store:
        sid = new_sid()
        assert store.save(sid, b"kept", 60, None)
        first, second = ranked(shared_nodes, record_key(app_name, sid))[:2]
        with direct(first) as client:
            client.delete(record_key(app_name, sid))  # evicted there
        with direct(second) as client:
            client.set(touch_key(app_name, sid), TOUCH.pack(TOUCH_MAGIC, math.inf))
        with caplog.at_level(logging.WARNING, logger="scalekit.sessions"):
            record = store.load(sid)
        assert record.data == b"kept" and math.isfinite(record.touched_at)
        assert "corrupt touch time" in caplog.text
        assert stored_on(first, app_name, sid).endswith(b"kept")  # copied back


def test_a_corrupt_copy_on_the_first_replica_is_skipped_by_saves_as_by_loads(
    shared_nodes, app_name
):
    """A load skips a corrupt first copy and returns the second replica's record; a save
    made from it compares with that same record (not the corrupt one: every save would
    conflict) and replaces the corrupt copy."""
    with opened(url_of(shared_nodes, replicas=2), app_name) as store:
        sid = new_sid()
        assert store.save(sid, b"v1", 60, None)
        first = ranked(shared_nodes, record_key(app_name, sid))[0]
        with direct(first) as client:
            client.set(record_key(app_name, sid), b"garbage")
        loaded = store.load(sid)
        assert loaded.data == b"v1"
        assert store.save(sid, b"v2", 60, loaded.version) is True
        assert store.load(sid).data == b"v2"
        assert stored_on(first, app_name, sid).endswith(b"v2")


def test_the_smallest_max_value_size_is_the_header_of_the_records_written(shared_nodes, app_name):
    """Without replicas the least max_value_size is as before (the 16-byte header + 1);
    with them, the 96-byte header + 1."""
    url = url_of(shared_nodes)
    with opened(url, app_name, max_value_size=RECORD.size + 1) as store:
        assert store.save(SID, b"x", 60, None) and store.load(SID).data == b"x"
    with pytest.raises(ConfigError, match="max_value_size"):
        open_store(url, app_name=app_name, max_value_size=RECORD.size)
    with pytest.raises(ConfigError, match="max_value_size"):
        open_store(url, app_name=app_name, replicas=2, max_value_size=REPLICATED.size)
    with opened(url, app_name, replicas=2, max_value_size=REPLICATED.size + 1) as store:
        assert store.save(new_sid(), b"x", 60, None)
