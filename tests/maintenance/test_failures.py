"""When the flag cannot be read the last known state holds, and the error is logged (once
a minute at most); web2py's DISABLED file means "down"."""

from __future__ import annotations

import logging
import os
import time

import pytest

from scalekit.core.errors import CorruptData
from scalekit.maintenance import FileFlag, MaintenanceMiddleware, State, open_flag
from tests.maintenance.conftest import call, hello
from tests.servers import RedisServer


@pytest.fixture
def private_redis():
    with RedisServer().running() as server:
        yield server


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "scalekit.maintenance" and r.levelno >= logging.ERROR]  # fmt: skip


@pytest.mark.parametrize("how", ["sigstop", "stopped"])
def test_redis_unreachable_keeps_the_last_state_and_logs_once(private_redis, app_name, caplog,
                                                              how):  # fmt: skip
    flag = open_flag(private_redis.url, app_name)
    site = MaintenanceMiddleware(hello, private_redis.url, app_name=app_name,
                                 cache_seconds=0, retry_seconds=0)  # fmt: skip
    flag.write(State("read-only", "Failover"))
    assert call(site, method="POST").status == 503
    if how == "sigstop":
        private_redis.freeze()
    else:
        private_redis.stop()
    try:
        started = time.monotonic()
        for _ in range(3):  # every one re-reads (no cache), fails, keeps read-only
            assert call(site, method="POST").status == 503
            assert call(site, method="GET").status == 200
        assert time.monotonic() - started < 6 * 0.25 + 1.5  # short timeouts
    finally:
        if how == "sigstop":
            private_redis.thaw()
    logged = errors(caplog)
    assert len(logged) == 1, logged  # rate-limited: the first failure only
    assert "cannot read the maintenance flag" in logged[0]
    assert f"scalekit:m:{app_name}" in logged[0]
    assert "keeping the last known state (read-only on: Failover)" in logged[0]
    if how == "sigstop":  # back: the flag is read again, and that is logged
        flag.clear()
        assert call(site, method="POST").status == 200
        assert any("readable again" in r.getMessage() for r in caplog.records)
    flag.close()


def test_unreachable_from_the_start_means_off_and_retries_later(app_name, caplog):
    from tests.servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    site = MaintenanceMiddleware(hello, url, app_name=app_name, retry_seconds=5)
    assert call(site, method="POST").status == 200
    started = time.monotonic()
    for _ in range(20):  # no new attempt before retry_seconds: no added latency
        call(site)
    assert time.monotonic() - started < 0.2
    assert "keeping the last known state (off)" in errors(caplog)[0]


def test_a_corrupt_flag_file_keeps_the_last_state(tmp_path, app_name, caplog):
    path = tmp_path / "MAINTENANCE"
    site = MaintenanceMiddleware(hello, f"file://{path}", app_name=app_name, cache_seconds=0,
                                 retry_seconds=0)  # fmt: skip
    path.write_text('{"mode": "down", "message": "Upgrade"}')
    assert call(site).status == 503
    for garbage in ('{"mode": "down", "mess', '{"mode": "sideways"}', "[]", '{"end": "soon"}'):
        path.write_text(garbage)
        assert call(site).status == 503
    logged = errors(caplog)
    assert len(logged) == 1
    assert str(path) in logged[0] and "not a maintenance flag" in logged[0]
    path.write_text('{"mode": "read-only"}')
    assert call(site).status == 200
    with pytest.raises(CorruptData, match="unknown field"):
        path.write_text('{"mode": "down", "extra": 1}')
        FileFlag(str(path)).read()


def test_web2pys_disabled_file_means_down(tmp_path, app_name):
    app_folder = tmp_path / "applications" / "shop"
    app_folder.mkdir(parents=True)
    site = MaintenanceMiddleware(hello, f"file://{app_folder}", app_name=app_name,
                                 cache_seconds=0)  # fmt: skip
    assert call(site).status == 200
    (app_folder / "DISABLED").write_text("")
    assert call(site).status == 503
    (app_folder / "DISABLED").write_text("Back at 3pm\n")
    response = call(site)
    assert response.status == 503 and "Back at 3pm" in response.text
    (app_folder / "DISABLED").write_text('{"mode": "read-only"}')  # our JSON also works there
    assert call(site).status == 200 and call(site, method="POST").status == 503
    os.unlink(app_folder / "DISABLED")
    assert call(site).status == 200


def test_file_flag_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    flag = FileFlag(str(tmp_path / "flag"))
    for n in range(20):
        flag.write(State("down", f"message {n}"))
    assert os.listdir(tmp_path) == ["flag"]
    assert flag.read() == State("down", "message 19")
    flag.clear()
    flag.clear()
    assert flag.read() is None
