"""The ram backend: LRU bound, no pickling, URL options."""

from __future__ import annotations

import re
import sys
import threading
import time

import pytest

from scalekit.cache import Cache, RamBackend, open_backend
from scalekit.core.errors import ConfigError


def test_lru_bound_evicts_the_least_recently_used():
    cache = Cache("shop", ram=RamBackend("shop", max_entries=3))
    for key in "abc":
        cache.ram.set(key, key, 60)
    assert cache.ram.get("a") == "a"  # a is now the most recent
    cache.ram.set("d", "d", 60)
    assert cache.ram.get("b") is None
    assert [cache.ram.get(k) for k in "acd"] == ["a", "c", "d"]
    assert cache.ram.stats()["server"] == {"entries": 3, "max_entries": 3}


def test_values_are_the_objects_themselves():
    cache = Cache("shop")
    value = {"f": lambda: 1}  # not picklable, not JSON: ram does not care
    assert cache.ram("k", lambda: value, 60) is value
    assert cache.ram.get("k") is value


def test_ram_urls():
    assert open_backend("ram://?max_entries=5").max_entries == 5
    assert open_backend("ram://?max_entries=0").max_entries is None
    assert open_backend("ram://").max_entries == 10_000
    with pytest.raises(ConfigError, match="unknown option"):
        open_backend("ram://?size=5")
    with pytest.raises(ConfigError, match="no host or path"):
        open_backend("ram://somewhere")
    with pytest.raises(ConfigError, match="max_entries"):
        RamBackend(max_entries=-1)


def test_two_apps_in_one_process_do_not_share():
    one, two = Cache("one"), Cache("two")
    one.ram.set("k", 1, 60)
    assert two.ram.get("k") is None
    assert two.ram.clear() == 0
    assert one.ram.get("k") == 1


def test_lock_free_reads_stay_consistent_under_concurrent_writes_and_evictions():
    """Hits take no lock: readers racing writers, deletes, LRU evictions and clears must
    never raise nor return another key's value."""
    backend = RamBackend(max_entries=50)
    errors, stop = [], threading.Event()
    keys = [f"k{n}" for n in range(200)]

    def reader():
        try:
            while not stop.is_set():
                for key in keys:
                    _, entry = backend.lookup(key, 60)
                    if entry is not None and entry.value != key.upper():
                        errors.append(f"{key} read {entry.value!r}")
        except Exception as exc:  # noqa: BLE001 - any error is the failure reported
            errors.append(repr(exc))

    def writer(n):
        try:
            while not stop.is_set():
                for key in keys[n::3]:
                    backend.set(key, key.upper(), 0.001 if n == 2 else 60)
                backend.delete(keys[n])
                backend.clear(re.compile(r"k1\d\d$"))
        except Exception as exc:  # noqa: BLE001 - any error is the failure reported
            errors.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=reader) for _ in range(3)]
        threads += [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        stop.wait(1.5)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(backend._data) <= 50


def test_a_full_cache_drops_expired_entries_before_live_ones():
    backend = RamBackend("shop", max_entries=4)
    for key in "ab":
        backend.set(key, key, 60)
    for key in "xy":  # used more recently than a and b, but soon expired
        backend.set(key, key, 0.05)
    time.sleep(0.1)
    for key in "cd":
        backend.set(key, key, 60)
    assert [backend.get(key).value for key in "abcd"] == ["a", "b", "c", "d"]
    assert backend.server_stats()["entries"] == 4
    backend.set("e", "e", 60)  # full of live entries: the least recently used goes
    assert backend.get("a") is None and backend.get("e").value == "e"
