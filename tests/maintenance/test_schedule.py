"""Scheduled windows open and close on time, and ``writes_enabled_for`` sees them coming."""

from __future__ import annotations

import time

import pytest

from scalekit import maintenance
from scalekit.maintenance import Maintenance, MaintenanceMiddleware, State
from scalekit.maintenance.state import parse_duration, parse_time
from tests.maintenance.conftest import call, hello


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def test_a_window_opens_and_closes_on_time(flag_url, app_name, flag):
    # a long cache: the edges of a known window must not wait for the next read
    site = MaintenanceMiddleware(hello, flag_url, app_name=app_name, cache_seconds=30)
    start = time.time() + 1.0
    flag.write(State("down", "Scheduled", start=start, end=start + 1.0))
    assert call(site).status == 200  # read now: scheduled, not yet on
    wait_until(start - 0.05)
    assert call(site).status == 200
    wait_until(start + 0.02)
    opened = call(site)
    assert opened.status == 503 and "Scheduled" in opened.text
    assert opened.header("Retry-After") == "1"
    wait_until(start + 0.95)
    assert call(site).status == 503
    wait_until(start + 1.02)
    assert call(site).status == 200


def test_writes_enabled_for_sees_a_window_coming(flag_url, app_name, flag):
    checker = Maintenance(flag_url, app_name, cache_seconds=0)
    assert checker.writes_enabled_for(3600)
    soon = time.time() + 60
    flag.write(State("read-only", start=soon, end=soon + 600))
    assert checker.writes_enabled_for(30)
    assert not checker.writes_enabled_for(120)
    flag.write(State("down", end=time.time() + 600))
    assert not checker.writes_enabled_for(0)
    flag.write(State("down", start=time.time() - 20, end=time.time() - 10))  # over
    assert checker.writes_enabled_for(3600)
    flag.clear()
    assert checker.writes_enabled_for(3600)


def test_the_module_function_asks_the_middlewares_flag_or_the_environment(
    tmp_path, app_name, monkeypatch
):
    url = f"file://{tmp_path}/flag"
    MaintenanceMiddleware(hello, url, app_name=app_name, cache_seconds=0)
    assert maintenance.writes_enabled_for(60)
    (tmp_path / "flag").write_text(f'{{"mode": "read-only", "start": {time.time() + 30}}}')
    assert not maintenance.writes_enabled_for(60)
    assert maintenance.writes_enabled_for(10)
    other = tmp_path / "other"
    monkeypatch.setenv("SCALEKIT_MAINTENANCE_FLAG", f"file://{other}")
    other.write_text('{"mode": "down"}')
    assert not maintenance.writes_enabled_for(0, app_name="x")


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400),
    ("0.5s", 0.5), ("2w", 14 * 86400),
])  # fmt: skip
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "5x", "m", "30 m x", "1.2.3h", "10 20"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_times_are_utc():
    assert parse_time("2025-06-01T02:00") == 1748743200
    assert parse_time("2025-06-01 02:00Z") == 1748743200
    assert parse_time("2025-06-01T04:00+02:00") == 1748743200
    assert parse_time("+10m", now=1000.0) == 1600.0
    assert parse_time("now", now=5.0) == 5.0
    for bad in ("tomorrow", "2025-13-01", "+", ""):
        with pytest.raises(ValueError):
            parse_time(bad)
