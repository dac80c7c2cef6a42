"""The session store protocol as a test suite any store runs (scalekit's own run it on every
backend in ``tests/sessions/test_store_conformance.py``).

Subclass :class:`SessionStoreSuite` in a test module (a class named ``Test...``) and give
the fixture ``make_store``: a function ``make_store(app_name, **options)`` that opens a store
for ``app_name`` as your users open it (a bad app name or an unknown option must raise
:class:`~scalekit.core.errors.ConfigError`). A store that other processes reach (a server,
a folder) subclasses :class:`SharedSessionStoreSuite` and also gives
``make_unreachable_store``. Imports pytest: for tests only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.sessions.stores import ANY, SessionStore
from scalekit.testing import fresh_app_name, run_in_children

__all__ = ["OTHER", "SID", "SessionStoreSuite", "SharedSessionStoreSuite"]

#: Two well-formed session ids the tests use.
SID = "AbCdEfGhIjKlMnOpQrStUvWx"
OTHER = "ZyXwVuTsRqPoNmLkJiHgFeDc"

MakeStore = Callable[..., SessionStore]


class SessionStoreSuite:
    """What every session store does: create, compare-and-set, touch, delete, expire,
    isolate apps, refuse malformed ids, lease, and py4web's ``get``/``set``."""

    @pytest.fixture
    def app_name(self) -> str:
        return fresh_app_name()

    @pytest.fixture
    def store_for(self, make_store: MakeStore) -> Iterator[MakeStore]:
        """``make_store``, with every store it opened closed after the test."""
        opened: list[SessionStore] = []

        def open_one(app_name: str, **options) -> SessionStore:
            opened.append(make_store(app_name, **options))
            return opened[-1]

        yield open_one
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, store_for: MakeStore, app_name: str) -> SessionStore:
        return store_for(app_name)

    def test_is_a_session_store(self, store):
        assert isinstance(store, SessionStore)

    def test_missing_session_loads_as_none(self, store):
        assert store.load(SID) is None

    def test_create_then_load(self, store):
        before = time.time()
        assert store.save(SID, b"payload-1", 60, None) is True
        record = store.load(SID)
        assert record.data == b"payload-1"
        assert record.version is not None
        assert before - 1 <= record.touched_at <= time.time() + 1

    def test_create_refuses_an_existing_record(self, store):
        assert store.save(SID, b"first", 60, None)
        assert store.save(SID, b"second", 60, None) is False
        assert store.load(SID).data == b"first"

    def test_compare_and_set(self, store):
        store.save(SID, b"v1", 60, None)
        loaded = store.load(SID)
        assert store.save(SID, b"v2", 60, loaded.version) is True
        assert store.load(SID).data == b"v2"
        # a writer holding the old version loses, and the record is untouched
        assert store.save(SID, b"stale", 60, loaded.version) is False
        assert store.load(SID).data == b"v2"

    def test_save_with_a_version_on_a_missing_record_is_a_conflict(self, store):
        store.save(SID, b"v1", 60, None)
        version = store.load(SID).version
        store.delete(SID)
        assert store.save(SID, b"v2", 60, version) is False
        assert store.load(SID) is None

    def test_unconditional_save(self, store):
        assert store.save(SID, b"one", 60, ANY) is True
        assert store.save(SID, b"two", 60, ANY) is True
        assert store.load(SID).data == b"two"

    def test_touch_refreshes_touched_at_but_not_data(self, store):
        store.save(SID, b"data", 60, None)
        first = store.load(SID)
        time.sleep(1.1)
        store.touch(SID, 60)
        second = store.load(SID)
        assert second.data == b"data"
        assert second.touched_at >= first.touched_at + 1
        # touching does not change the version: a writer that loaded before still wins
        assert store.save(SID, b"after-touch", 60, first.version) is True

    def test_touch_of_a_missing_session_creates_nothing(self, store):
        store.touch(SID, 60)
        assert store.load(SID) is None

    def test_delete(self, store):
        store.save(SID, b"x", 60, None)
        store.delete(SID)
        assert store.load(SID) is None
        store.delete(SID)  # already gone: no error

    def test_records_expire_after_their_ttl(self, store):
        store.save(SID, b"short", 1, None)
        store.save(OTHER, b"long", 60, None)
        time.sleep(2.2)
        assert store.load(SID) is None
        assert store.load(OTHER).data == b"long"
        # an expired record does not block creating a new one under the same id
        assert store.save(SID, b"again", 60, None) is True

    def test_touch_extends_the_ttl(self, store):
        store.save(SID, b"x", 2, None)
        time.sleep(1.2)
        store.touch(SID, 3)
        time.sleep(1.5)
        assert store.load(SID).data == b"x"

    def test_no_ttl_means_no_expiry(self, store):
        store.save(SID, b"forever", None, None)
        time.sleep(1.1)
        assert store.load(SID).data == b"forever"

    def test_binary_and_large_payloads_round_trip(self, store):
        payload = bytes(range(256)) * 512  # 128 KiB, every byte value
        store.save(SID, payload, 60, None)
        assert store.load(SID).data == payload

    def test_apps_are_isolated(self, store_for, app_name):
        first, second = store_for(app_name), store_for(app_name + "b")
        first.save(SID, b"first app", 60, None)
        assert second.load(SID) is None
        second.save(SID, b"second app", 60, None)
        assert first.load(SID).data == b"first app"

    @pytest.mark.parametrize(
        "bad_id",
        ["", "short", "../../etc/passwd", "a" * 200, "AbCdEfGhIjKlMnOp/rStUv", "AbCdEfGhIjKlMnOp*",
         "AbCdEfGhIjKlMnOpé", "AbCdEfGhIjKlMnOp\x00x", "AbCdEfGhIjKlMnOp rSt", None],
    )  # fmt: skip
    def test_malformed_ids_are_refused_before_any_io(self, store, bad_id):
        for call in (
            lambda: store.load(bad_id),
            lambda: store.save(bad_id, b"x", 60, None),
            lambda: store.touch(bad_id, 60),
            lambda: store.delete(bad_id),
            lambda: store.try_lease(bad_id, "token", 5),
        ):
            with pytest.raises(ValueError, match="malformed session id"):
                call()

    def test_lock_is_exclusive_and_released_only_by_its_owner(self, store):
        assert store.try_lease(SID, "owner-1", 10) is True
        assert store.try_lease(SID, "owner-2", 10) is False
        store.release_lease(SID, "owner-2")  # not the holder: no effect
        assert store.try_lease(SID, "owner-2", 10) is False
        store.release_lease(SID, "owner-1")
        assert store.try_lease(SID, "owner-2", 10) is True
        store.release_lease(SID, "owner-2")

    def test_lock_expires_when_its_holder_never_releases_it(self, store):
        assert store.try_lease(SID, "crashed-worker", 1)
        time.sleep(2.2)
        assert store.try_lease(SID, "next-worker", 10) is True
        store.release_lease(SID, "next-worker")

    def test_locks_do_not_touch_session_data(self, store):
        store.save(SID, b"data", 60, None)
        store.try_lease(SID, "owner", 10)
        assert store.load(SID).data == b"data"
        store.release_lease(SID, "owner")
        assert store.load(SID).data == b"data"

    def test_concurrent_compare_and_set_loses_no_update(self, store):
        store.save(SID, b"0", 60, None)
        errors = []

        def increment(times):
            try:
                for _ in range(times):
                    while True:
                        record = store.load(SID)
                        if store.save(SID, str(int(record.data) + 1).encode(), 60, record.version):
                            break
            except Exception as exc:  # noqa: BLE001 - surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=increment, args=(15,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert store.load(SID).data == b"60"

    def test_py4web_storage_api(self, store):
        key = "6f1c1e3a-54b2-4b64-9d2b-d2f0f0b0c0de"
        assert store.get(key) is None
        store.set(key, '{"user": "zoë"}', 60)
        assert store.get(key) == '{"user": "zoë"}'
        store.set(key, '{"user": "ann"}', 60)
        assert store.get(key) == '{"user": "ann"}'
        assert store.get(key.encode()) == '{"user": "ann"}'  # py4web sends its cookie as bytes
        for forged in (b"../../etc/passwd", "zo\u00eb" * 8, b"\xff" * 20, "short", b""):
            assert store.get(forged) is None  # a cookie that is no session id: no session
        store.delete(key)
        assert store.get(key) is None

    def test_unknown_options_are_config_errors(self, make_store, app_name):
        with pytest.raises(ConfigError, match="unknown"):
            make_store(app_name, no_such_option=1)

    def test_bad_app_names_are_config_errors(self, make_store):
        with pytest.raises(ConfigError, match="app name"):
            make_store("../etc")


class SharedSessionStoreSuite(SessionStoreSuite):
    """A store other processes reach: it also works in a forked child, and fails fast and
    cleanly when its server or folder is not there. Give also the fixture
    ``make_unreachable_store``: ``make_unreachable_store(app_name)`` opens your store on a server
    that is not there (its error must not show the password ``hunter2``)."""

    def test_works_in_a_forked_child_and_after(self, store):
        store.save(SID, b"parent", 60, None)

        def child(_index):  # must not reuse the parent's sockets
            record = store.load(SID)
            assert record and record.data == b"parent" and store.save(OTHER, b"child", 60, None)

        assert run_in_children(1, child) == [0]
        assert store.load(OTHER).data == b"child"
        assert store.load(SID).data == b"parent"

    def test_a_store_that_is_down_raises_store_unavailable_quickly(
        self, make_unreachable_store, app_name
    ):
        down = make_unreachable_store(app_name)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            down.save(SID, b"x", 60, None)
            down.load(SID)
        assert time.monotonic() - started < 10
        assert "hunter2" not in str(caught.value)
        down.close()
