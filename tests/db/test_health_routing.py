"""HealthMemory's backoff and half-open probing on a controlled clock, and the Router's
read-only and pinning decisions on plain environs."""

from __future__ import annotations

import time

import pytest

from scalekit.core.errors import ConfigError
from scalekit.db import HealthMemory, Router
from scalekit.db.health import PROBE, USE


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cooldown_doubles_up_to_the_cap_and_success_resets_it():
    clock, events = Clock(), []
    health = HealthMemory(cooldown=1, max_cooldown=5, jitter=0, on_change=events.append,
                          clock=clock)  # fmt: skip
    assert health.acquire("h") == PROBE  # never seen: checked first
    assert [health.failed("h", "refused") for _ in range(4)] == [1, 2, 4, 5]
    assert health.acquire("h") is None
    clock.now += 5
    assert health.acquire("h") == PROBE
    health.succeeded("h")
    assert health.acquire("h") == USE
    assert health.failed("h", "refused") == 1
    assert [e.state for e in events] == ["down", "up", "down"]


def test_after_the_cooldown_one_caller_probes_while_the_others_skip():
    clock = Clock()
    health = HealthMemory(cooldown=1, jitter=0, clock=clock)
    health.failed("h", "timeout")
    clock.now += 1
    assert health.acquire("h") == PROBE
    assert health.acquire("h") is None  # the probe is under way
    health.failed("h", "timeout")
    assert health.acquire("h") is None
    clock.now += 2
    assert health.acquire("h") == PROBE


def test_jitter_spreads_the_cooldown():
    health = HealthMemory(cooldown=10, max_cooldown=10, jitter=0.2)
    waits = {round(health.failed(f"h{i}", "x"), 3) for i in range(50)}
    assert len(waits) > 1 and all(8 <= w <= 12 for w in waits)


def test_a_broken_hook_does_not_break_the_caller(caplog):
    def hook(event):
        raise RuntimeError("hook bug")

    HealthMemory(on_change=hook).failed("h", "refused")
    assert "hook failed" in caplog.text


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("GET", "/app/default/index", True),
        ("HEAD", "/", True),
        ("POST", "/app/default/index", False),
        ("POST", "/app/default/search", True),
        ("POST", "/app/default/search.json/page/2", True),
        ("POST", "/app/shop/list", True),
        ("POST", "/app/default/list", False),
    ],
)
def test_read_only_by_method_and_by_web2py_action(method, path, expected):
    router = Router(read_only_actions=["search", "shop/list"])
    assert router.read_only({"REQUEST_METHOD": method, "PATH_INFO": path}) is expected


def test_routing_by_actions_only():
    router = Router(read_only_actions=["index"], read_only_methods=())
    assert not router.read_only({"REQUEST_METHOD": "GET", "PATH_INFO": "/app/c/edit"})
    assert router.read_only({"REQUEST_METHOD": "GET", "PATH_INFO": "/app"})


def test_the_pin_cookie_expires_and_cannot_be_stretched():
    router = Router(pin_seconds=10)
    (header,) = router.pin({"wsgi.url_scheme": "https"})
    assert header[0] == "Set-Cookie" and "Secure" in header[1] and "HttpOnly" in header[1]
    cookie = header[1].split(";")[0]
    assert router.pinned({"HTTP_COOKIE": f"other=1; {cookie}"})
    for until in (time.time() - 1, time.time() + 3600, "junk"):
        assert not router.pinned({"HTTP_COOKIE": f"scalekit_db_pin={until}"})
    assert not Router(pin_seconds=0).pinned({"HTTP_COOKIE": cookie})


def test_bad_routing_options_are_refused():
    with pytest.raises(ConfigError, match="list of names"):
        Router(read_only_actions="index")
    with pytest.raises(ConfigError, match="negative"):
        Router(pin_seconds=-1)
