"""The cache semantics as a test suite any backend runs (scalekit's own run it on every
backend in ``tests/cache/test_conformance.py``).

Subclass :class:`CacheBackendSuite` in a test module (a class named ``Test...``) and give
the fixture ``make_backend``: a function ``make_backend(app_name)`` that opens
a :class:`~scalekit.cache.CacheBackend` for ``app_name``. The suite runs web2py's
``cache.x(key, f, time_expire)`` over it through a :class:`~scalekit.cache.CacheModel`, then
the backend protocol underneath. A backend whose entries other processes see and whose
values go through a serializer subclasses :class:`SharedCacheBackendSuite` instead.
Imports pytest: for tests only.
"""

from __future__ import annotations

import datetime
import decimal
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from scalekit.cache import CacheBackend, CacheModel
from scalekit.core.errors import SerializationError
from scalekit.testing import fresh_app_name, run_in_children

__all__ = ["CacheBackendSuite", "Calls", "SharedCacheBackendSuite"]

MakeModel = Callable[..., CacheModel]


class Calls:
    """A function to cache that counts its calls and returns a new value each time."""

    def __init__(self, prefix: str = "v"):
        self.count, self.prefix = 0, prefix

    def __call__(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count}"


class CacheBackendSuite:
    """What every backend does under a model: hits and misses, ``time_expire`` at read
    time, deletes, round trips, counters, ``clear`` per app, stats; and underneath, ``add``,
    store times, storage TTLs and leases apart from values."""

    @pytest.fixture
    def app_name(self) -> str:
        return fresh_app_name()

    @pytest.fixture
    def make_model(self, make_backend: Callable[[str], CacheBackend]) -> Iterator[MakeModel]:
        """Models on the backend under test: ``make_model(app_name, **model_options)``; their
        backends are closed after the test."""
        opened: list[CacheBackend] = []

        def make(app_name: str, **options) -> CacheModel:
            opened.append(make_backend(app_name))
            return CacheModel(opened[-1], **options)

        yield make
        for backend in opened:
            backend.close()

    @pytest.fixture
    def model(self, make_model: MakeModel, app_name: str) -> CacheModel:
        return make_model(app_name)

    def test_is_a_model_over_a_backend(self, model):
        assert isinstance(model, CacheModel)
        assert isinstance(model.backend, CacheBackend)

    def test_miss_computes_and_stores_then_hits(self, model):
        f = Calls()
        assert model("k", f, 60) == "v1"
        assert model("k", f, 60) == "v1"
        assert f.count == 1

    def test_time_expire_is_checked_at_read_time(self, model):
        f = Calls()
        assert model("k", f, 60) == "v1"
        time.sleep(0.3)
        assert model("k", f, 60) == "v1"  # younger than 60 s
        assert model("k", f, 0.2) == "v2"  # older than 0.2 s: recomputed
        assert model("k", f, 60) == "v2"

    def test_zero_forces_a_refresh(self, model):
        f = Calls()
        model("k", f, 60)
        assert model("k", f, 0) == "v2"
        assert model("k", f, 0) == "v3"
        assert model("k", f, 60) == "v3"  # the refreshed value is stored

    def test_none_never_expires(self, model):
        f = Calls()
        assert model("k", f, None) == "v1"
        time.sleep(0.3)
        assert model("k", f, None) == "v1"
        assert f.count == 1

    def test_f_none_deletes(self, model):
        f = Calls()
        model("k", f, 60)
        assert model("k", None) is None
        assert model.get("k") is None
        assert model("k", f, 60) == "v2"

    def test_get_set_delete(self, model):
        assert model.get("k") is None
        assert model.get("k", "fallback") == "fallback"
        model.set("k", {"a": [1, 2]}, 60)
        assert model.get("k") == {"a": [1, 2]}
        assert model.delete("k") is True
        assert model.delete("k") is False
        assert model.get("k") is None

    def test_get_honours_time_expire(self, model):
        model.set("k", "value", 60)
        time.sleep(0.3)
        assert model.get("k", time_expire=60) == "value"
        assert model.get("k", time_expire=0.2) is None

    def test_values_round_trip(self, model):
        value = {
            "when": datetime.datetime(2026, 1, 2, 3, 4, 5),
            "day": datetime.date(2026, 1, 2),
            "price": decimal.Decimal("9.99"),
            "raw": b"\x00\xff",
            "tags": {"a", "b"},
            "pair": (1, "x"),
            "id": uuid.UUID(int=7),
            "n": None,
            "f": 1.5,
        }
        model.set("k", value, 60)
        assert model.get("k") == value
        assert model("k", lambda: None, 60) == value

    def test_keys_are_any_string(self, model):
        for key in ("with space", "ctrl\x01char", "ünïcode/../..", "x" * 1000):
            model.set(key, key, 60)
            assert model.get(key) == key

    def test_increment(self, model):
        assert model.increment("n") == 1
        assert model.increment("n", 5) == 6
        assert model.increment("n", -2) == 4
        assert model.get("n") == 4
        model.set("m", 10, 60)
        assert model.increment("m") == 11
        model.set("s", "text", 60)
        with pytest.raises(ValueError, match="'s'"):
            model.increment("s")

    def test_increment_is_atomic_across_threads(self, model):
        def work():
            for _ in range(200):
                model.increment("n")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert model.get("n") == 1600

    def test_clear_by_regex_touches_only_this_app(self, make_model, app_name):
        mine, other = make_model(app_name), make_model(app_name + "x")
        for key in ("user:1", "user:2", "page:user:3"):
            mine.set(key, key, 60)
        other.set("user:1", "theirs", 60)
        assert mine.clear("user:") == 2  # re.match: anchored at the start, like web2py
        assert mine.get("user:1") is None and mine.get("user:2") is None
        assert mine.get("page:user:3") == "page:user:3"
        assert other.get("user:1") == "theirs"
        assert mine.clear() == 1
        assert mine.get("page:user:3") is None
        assert other.get("user:1") == "theirs"

    def test_stats_counts(self, model):
        f = Calls()
        model("a", f, 60)  # miss + set
        model("a", f, 60)  # hit
        model("a", f, 60)  # hit
        model.get("b")  # miss
        model.set("c", 1, 60)  # set
        stats = model.stats()
        assert (stats["hits"], stats["misses"], stats["sets"], stats["errors"]) == (2, 2, 2, 0)
        assert stats["backend"] == model.backend.kind
        assert isinstance(stats["server"], dict)

    # -- the backend protocol underneath ------------------------------------------------
    def test_backend_add_stores_only_when_absent(self, model):
        backend = model.backend
        assert backend.add("k", "first", 60) is True
        assert backend.add("k", "second", 60) is False
        assert backend.get("k").value == "first"

    def test_backend_entries_carry_their_store_time(self, model):
        before = time.time()
        model.backend.set("k", "v", 60)
        entry = model.backend.get("k")
        assert entry.value == "v"
        assert before - 1 <= entry.stored_at <= time.time() + 1

    def test_backend_ttl_bounds_storage(self, model):
        model.backend.set("k", "v", 0.3)
        assert model.backend.get("k") is not None
        time.sleep(0.4)
        assert model.backend.get("k") is None

    def test_backend_leases(self, model):
        backend = model.backend
        assert backend.try_lease("k", "owner", 30) is True
        assert backend.try_lease("k", "other", 30) is False
        assert backend.release_lease("k", "other") is False  # never someone else's
        assert backend.try_lease("k", "other", 30) is False
        assert backend.release_lease("k", "owner") is True
        assert backend.try_lease("k", "other", 0.3) is True
        time.sleep(0.4)
        assert backend.try_lease("k", "third", 30) is True  # an expired lease is free
        assert backend.release_lease("k", "other") is False

    def test_leases_and_values_are_apart(self, model):
        backend = model.backend
        backend.try_lease("k", "owner", 30)
        assert backend.get("k") is None
        model.set("k", "v", 60)
        assert model.clear() == 1
        assert backend.try_lease("k", "other", 30) is False  # clear leaves leases alone


class SharedCacheBackendSuite(CacheBackendSuite):
    """A backend other processes see, whose values go through a serializer: counters stay
    atomic across processes, and a value it cannot store is refused naming its key (a
    process-local backend keeps the objects themselves: every value can be stored there)."""

    def test_increment_is_atomic_across_processes(self, model):
        model.increment("n", 0)

        def work(_index):
            for _ in range(100):
                model.increment("n")

        assert run_in_children(4, work) == [0, 0, 0, 0]
        assert model.get("n") == 400

    def test_unstorable_value_names_the_key(self, model):
        with pytest.raises(SerializationError, match="'bad-key'"):
            model.set("bad-key", {"x": object()}, 60)
        with pytest.raises(SerializationError, match="'bad-key'"):
            model("bad-key", object, 60)
