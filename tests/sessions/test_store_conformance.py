"""The session store protocol, run against every backend on its real server."""

from __future__ import annotations

import os
import threading
import time

import pytest

from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.sessions.stores import ANY, SessionStore, open_store
from tests.sessions.conftest import down_url_for

SID = "AbCdEfGhIjKlMnOpQrStUvWx"
OTHER = "ZyXwVuTsRqPoNmLkJiHgFeDc"


def test_is_a_session_store(store):
    assert isinstance(store, SessionStore)


def test_missing_session_loads_as_none(store):
    assert store.load(SID) is None


def test_create_then_load(store):
    before = time.time()
    assert store.save(SID, b"payload-1", 60, None) is True
    record = store.load(SID)
    assert record.data == b"payload-1"
    assert record.version is not None
    assert before - 1 <= record.touched_at <= time.time() + 1


def test_create_refuses_an_existing_record(store):
    assert store.save(SID, b"first", 60, None)
    assert store.save(SID, b"second", 60, None) is False
    assert store.load(SID).data == b"first"


def test_compare_and_set(store):
    store.save(SID, b"v1", 60, None)
    loaded = store.load(SID)
    assert store.save(SID, b"v2", 60, loaded.version) is True
    assert store.load(SID).data == b"v2"
    # a writer holding the old version loses, and the record is untouched
    assert store.save(SID, b"stale", 60, loaded.version) is False
    assert store.load(SID).data == b"v2"


def test_save_with_a_version_on_a_missing_record_is_a_conflict(store):
    store.save(SID, b"v1", 60, None)
    version = store.load(SID).version
    store.delete(SID)
    assert store.save(SID, b"v2", 60, version) is False
    assert store.load(SID) is None


def test_unconditional_save(store):
    assert store.save(SID, b"one", 60, ANY) is True
    assert store.save(SID, b"two", 60, ANY) is True
    assert store.load(SID).data == b"two"


def test_touch_refreshes_touched_at_but_not_data(store):
    store.save(SID, b"data", 60, None)
    first = store.load(SID)
    time.sleep(1.1)
    store.touch(SID, 60)
    second = store.load(SID)
    assert second.data == b"data"
    assert second.touched_at >= first.touched_at + 1
    # touching does not change the version: a writer that loaded before still wins
    assert store.save(SID, b"after-touch", 60, first.version) is True


def test_touch_of_a_missing_session_creates_nothing(store):
    store.touch(SID, 60)
    assert store.load(SID) is None


def test_delete(store):
    store.save(SID, b"x", 60, None)
    store.delete(SID)
    assert store.load(SID) is None
    store.delete(SID)  # already gone: no error


def test_records_expire_after_their_ttl(store):
    store.save(SID, b"short", 1, None)
    store.save(OTHER, b"long", 60, None)
    time.sleep(2.2)
    assert store.load(SID) is None
    assert store.load(OTHER).data == b"long"
    # an expired record does not block creating a new one under the same id
    assert store.save(SID, b"again", 60, None) is True


def test_touch_extends_the_ttl(store):
    store.save(SID, b"x", 2, None)
    time.sleep(1.2)
    store.touch(SID, 3)
    time.sleep(1.5)
    assert store.load(SID).data == b"x"


def test_no_ttl_means_no_expiry(store):
    store.save(SID, b"forever", None, None)
    time.sleep(1.1)
    assert store.load(SID).data == b"forever"


def test_binary_and_large_payloads_round_trip(store):
    payload = bytes(range(256)) * 512  # 128 KiB, every byte value
    store.save(SID, payload, 60, None)
    assert store.load(SID).data == payload


def test_apps_are_isolated(store_url, app_name):
    first, second = open_store(store_url, app=app_name), open_store(store_url, app=app_name + "b")
    try:
        first.save(SID, b"first app", 60, None)
        assert second.load(SID) is None
        second.save(SID, b"second app", 60, None)
        assert first.load(SID).data == b"first app"
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    "bad_id",
    ["", "short", "../../etc/passwd", "a" * 200, "AbCdEfGhIjKlMnOp/rStUv", "AbCdEfGhIjKlMnOp*",
     "AbCdEfGhIjKlMnOpé", "AbCdEfGhIjKlMnOp\x00x", "AbCdEfGhIjKlMnOp rSt", None],
)  # fmt: skip
def test_malformed_ids_are_refused_before_any_io(store, bad_id):
    for call in (
        lambda: store.load(bad_id),
        lambda: store.save(bad_id, b"x", 60, None),
        lambda: store.touch(bad_id, 60),
        lambda: store.delete(bad_id),
        lambda: store.try_lease(bad_id, "token", 5),
    ):
        with pytest.raises(ValueError, match="malformed session id"):
            call()


def test_lock_is_exclusive_and_released_only_by_its_owner(store):
    assert store.try_lease(SID, "owner-1", 10) is True
    assert store.try_lease(SID, "owner-2", 10) is False
    store.release_lease(SID, "owner-2")  # not the holder: no effect
    assert store.try_lease(SID, "owner-2", 10) is False
    store.release_lease(SID, "owner-1")
    assert store.try_lease(SID, "owner-2", 10) is True
    store.release_lease(SID, "owner-2")


def test_lock_expires_when_its_holder_never_releases_it(store):
    assert store.try_lease(SID, "crashed-worker", 1)
    time.sleep(2.2)
    assert store.try_lease(SID, "next-worker", 10) is True
    store.release_lease(SID, "next-worker")


def test_locks_do_not_touch_session_data(store):
    store.save(SID, b"data", 60, None)
    store.try_lease(SID, "owner", 10)
    assert store.load(SID).data == b"data"
    store.release_lease(SID, "owner")
    assert store.load(SID).data == b"data"


def test_concurrent_compare_and_set_loses_no_update(store):
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


def test_py4web_storage_api(store):
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


def test_works_in_a_forked_child_and_after(store):
    store.save(SID, b"parent", 60, None)
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's sockets
        code = 1
        try:
            record = store.load(SID)
            if record and record.data == b"parent" and store.save(OTHER, b"child", 60, None):
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.load(OTHER).data == b"child"
    assert store.load(SID).data == b"parent"


def test_a_store_that_is_down_raises_store_unavailable_quickly(store_kind, app_name, tmp_path):
    down = open_store(down_url_for(store_kind, tmp_path), app=app_name)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        down.save(SID, b"x", 60, None)
        down.load(SID)
    assert time.monotonic() - started < 10
    assert "hunter2" not in str(caught.value)
    down.close()


def test_unknown_options_are_config_errors(store_url, app_name):
    with pytest.raises(ConfigError, match="unknown"):
        open_store(store_url, app=app_name, no_such_option=1)


def test_bad_app_names_are_config_errors(store_url):
    with pytest.raises(ConfigError, match="app name"):
        open_store(store_url, app="../etc")
