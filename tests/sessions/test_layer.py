"""The session layer on a real Redis: laziness, saving, cookies, timeouts, security."""

from __future__ import annotations

import datetime
import decimal
import logging
import sys
import time
import uuid

import pytest

from scalekit import sessions
from scalekit.core.errors import ConfigError, SerializationError
from tests.sessions.apps import SECRET, read_all, route, set_values, untouched
from tests.wsgi import Client

NEW_SECRET = "new-secret-0123456789abcdef-0123456789"


@pytest.fixture
def store(redis_store):
    return redis_store


# Commands that only our Lua scripts run (commandstats counts them too), and the test's own.
NOT_SENT = {"hget", "hset", "exists", "pexpire", "persist", "zadd", "script|load", "info",
            "config|resetstat"}  # fmt: skip


def commands(redis_client) -> dict[str, int]:
    """Commands sessions sent to Redis since the last ``CONFIG RESETSTAT``: each one is a
    round trip (a first EVALSHA answered NOSCRIPT is not counted: it happens once per
    script per server)."""
    stats = redis_client.info("commandstats")
    counts = {
        name.removeprefix("cmdstat_"): v["calls"]
        - v.get("failed_calls", 0)
        - v.get("rejected_calls", 0)
        for name, v in stats.items()
    }
    return {name: n for name, n in counts.items() if n and name not in NOT_SENT}


def reset(redis_client):
    redis_client.config_resetstat()


def make(store, actions, **options):
    app = sessions.SessionMiddleware(
        route(actions), store, SECRET, app_name=store.app_name, **options
    )
    return Client(app), app


ACTIONS = {"/set": set_values(user="ann", n=1), "/read": read_all, "/none": untouched}


def cookie_of(client, store):
    return client.cookies.get(f"session_id_{store.app_name}")


def test_untouched_session_does_no_store_io_and_sends_no_cookie(store, redis_client):
    client, _ = make(store, ACTIONS)
    reset(redis_client)
    response = client.get("/none")
    assert response.status == 200 and response.header("Set-Cookie") is None
    client.get("/set")
    reset(redis_client)
    assert client.get("/none").header("Set-Cookie") is None
    assert commands(redis_client) == {}


def test_new_session_sets_a_signed_private_cookie(store):
    client, _ = make(store, ACTIONS)
    response = client.get("/set")
    set_cookie = response.header("Set-Cookie")
    name = f"session_id_{store.app_name}"
    assert set_cookie.startswith(f"{name}=")
    value = cookie_of(client, store)
    sid, signature = value.split(".")
    assert len(sid) == 24 and len(signature) == 43  # 144-bit id, HMAC-SHA256
    for attribute in ("Path=/", "HttpOnly", "SameSite=Lax"):
        assert attribute in set_cookie
    assert "Secure" not in set_cookie and "Max-Age" not in set_cookie
    assert response.header("Cache-Control") == "private"
    assert response.header("Vary") == "Cookie"
    assert store.load(sid) is not None


def test_data_survives_to_the_next_request_with_attribute_access(store):
    def check(session, environ):
        return [session.user, session["n"], session.missing, "user" in session, len(session)]

    client, _ = make(store, {**ACTIONS, "/check": check})
    client.get("/set")
    assert client.get("/check").text == '["ann", 1, null, true, 2]'


def test_a_read_only_request_is_one_round_trip_and_no_write(store, redis_client):
    client, _ = make(store, ACTIONS)
    client.get("/set")
    reset(redis_client)
    response = client.get("/read")
    assert response.text == '{"n": 1, "user": "ann"}'
    assert commands(redis_client) == {"hmget": 1}
    assert response.header("Set-Cookie") is None and response.header("Cache-Control") is None


def test_a_change_is_one_load_and_one_save(store, redis_client):
    client, _ = make(store, {**ACTIONS, "/bump": lambda s, e: s.update(n=s.n + 1) or "ok"})
    client.get("/set")
    reset(redis_client)
    client.get("/bump")
    assert commands(redis_client) == {"hmget": 1, "evalsha": 1}
    assert client.get("/read").text == '{"n": 2, "user": "ann"}'


def test_nested_mutations_are_saved(store):
    def add(session, environ):
        session.setdefault("cart", {"items": []})["items"].append("book")
        return "ok"

    client, _ = make(store, {**ACTIONS, "/add": add})
    client.get("/add")
    client.get("/add")
    assert client.get("/read").text == '{"cart": {"items": ["book", "book"]}}'


def test_an_empty_new_session_is_never_stored(store, redis_client):
    def look(session, environ):
        return str(session.user)

    client, _ = make(store, {"/look": look, "/emptied": lambda s, e: s.update(a=1) or s.clear()})
    reset(redis_client)
    assert client.get("/look").header("Set-Cookie") is None
    assert client.get("/emptied").header("Set-Cookie") is None
    assert commands(redis_client) == {}


def test_forget_skips_the_save(store):
    def change_but_forget(session, environ):
        session.user = "bob"
        session.forget()
        return "ok"

    client, _ = make(store, {**ACTIONS, "/forget": change_but_forget})
    client.get("/set")
    assert client.get("/forget").header("Set-Cookie") is None
    assert client.get("/read").text == '{"n": 1, "user": "ann"}'


def test_renew_gives_a_new_id_keeps_data_and_deletes_the_old_record(store):
    def login(session, environ):
        session.renew()
        session.user = "admin"
        return "ok"

    client, _ = make(store, {**ACTIONS, "/login": login})
    client.get("/set")
    old_sid = cookie_of(client, store).split(".")[0]
    response = client.get("/login")
    new_sid = cookie_of(client, store).split(".")[0]
    assert new_sid != old_sid
    assert response.header("Cache-Control") == "private"
    assert store.load(old_sid) is None
    assert client.get("/read").text == '{"n": 1, "user": "admin"}'


def test_renew_with_clear_drops_the_data(store):
    def logout(session, environ):
        session.renew(clear=True)
        return "ok"

    client, _ = make(store, {**ACTIONS, "/logout": logout})
    client.get("/set")
    old_sid = cookie_of(client, store).split(".")[0]
    response = client.get("/logout")
    assert "Max-Age=0" in response.header("Set-Cookie")
    assert cookie_of(client, store) is None and store.load(old_sid) is None


def test_clear_deletes_the_stored_session_and_the_cookie(store):
    client, _ = make(store, {**ACTIONS, "/clear": lambda s, e: s.clear() or "ok"})
    client.get("/set")
    sid = cookie_of(client, store).split(".")[0]
    response = client.get("/clear")
    assert "Max-Age=0" in response.header("Set-Cookie")
    assert response.header("Cache-Control") == "private"
    assert store.load(sid) is None


@pytest.mark.parametrize(
    "options, https, secure_flag",
    [({}, False, False), ({}, True, True), ({"secure": True}, False, True),
     ({"secure": False}, True, False)],
)  # fmt: skip
def test_secure_flag_auto_or_forced(store, options, https, secure_flag):
    client, _ = make(store, ACTIONS, **options)
    set_cookie = client.request("/set", https=https).header("Set-Cookie")
    assert ("; Secure" in set_cookie) is secure_flag


def test_session_secure_method_marks_the_cookie_secure(store):
    def secure(session, environ):
        session.secure()
        return "ok"

    client, _ = make(store, {**ACTIONS, "/secure": secure})
    client.get("/set")
    assert "; Secure" in client.get("/secure").header("Set-Cookie")


def test_cookie_attributes_are_configurable(store):
    client, _ = make(store, ACTIONS, cookie_name="sid", cookie_path="/app", samesite="Strict",
                     cookie_domain="example.com", cookie_max_age=600)  # fmt: skip
    set_cookie = client.get("/set").header("Set-Cookie")
    for attribute in ("sid=", "Path=/app", "Domain=example.com", "Max-Age=600",
                      "SameSite=Strict"):  # fmt: skip
        assert attribute in set_cookie


def test_cache_control_merges_with_the_apps_headers(store):
    def public(environ, start_response):
        sessions.current().user = "x"
        start_response("200 OK", [("Cache-Control", "public, max-age=60"), ("Vary", "Accept")])
        return [b"ok"]

    app = sessions.SessionMiddleware(public, store, SECRET, app_name=store.app_name)
    response = Client(app).get("/")
    assert response.header("Cache-Control") == "private, max-age=60"
    assert response.header("Vary") == "Accept, Cookie"

    def no_store(environ, start_response):
        sessions.current().user = "x"
        start_response("200 OK", [("Cache-Control", "no-store")])
        return [b"ok"]

    app = sessions.SessionMiddleware(no_store, store, SECRET, app_name=store.app_name)
    assert Client(app).get("/").header("Cache-Control") == "no-store"


def test_touch_is_throttled_and_never_rewrites_data(store, redis_client):
    client, _ = make(store, ACTIONS, idle_timeout=10, touch_fraction=0.1)
    client.get("/set")
    reset(redis_client)
    client.get("/read")
    assert commands(redis_client) == {"hmget": 1}  # touched < 1 s ago: no touch
    time.sleep(1.1)
    reset(redis_client)
    client.get("/read")
    assert commands(redis_client) == {"hmget": 1, "evalsha": 1}  # the touch script
    reset(redis_client)
    client.get("/read")
    assert commands(redis_client) == {"hmget": 1}
    sid = cookie_of(client, store).split(".")[0]
    assert 9000 < redis_client.pttl(f"scalekit:s:{store.app_name}:{sid}") <= 10000


def test_idle_timeout_expires_the_session(store):
    client, _ = make(store, ACTIONS, idle_timeout=1)
    client.get("/set")
    time.sleep(2.2)
    assert client.get("/read").text == "{}"


def test_absolute_timeout_ends_even_an_active_session(store):
    client, _ = make(store, {**ACTIONS, "/bump": lambda s, e: s.update(n=(s.n or 0) + 1)},
                     idle_timeout=60, absolute_timeout=2)  # fmt: skip
    client.get("/set")
    for _ in range(3):
        time.sleep(0.8)
        client.get("/bump")
    # the last bump came after the absolute limit: it started a new session
    assert client.get("/read").text == '{"n": 1}'


BAD_COOKIES = {
    "forged signature": lambda good: good[:-4] + "AAAA",
    "truncated": lambda good: good[:30],
    "unsigned id": lambda good: good.split(".")[0],
    "oversized": lambda good: good + "A" * 5000,
    "non-ascii": lambda good: good[:-1] + "é",
    "path-like": lambda good: "../../../../etc/passwd." + good.split(".")[1],
    "empty": lambda good: "",
    "other secret": None,
}


@pytest.mark.parametrize("kind", BAD_COOKIES)
def test_bad_cookies_are_ignored_without_touching_the_store(store, redis_client, kind, caplog):
    client, _ = make(store, ACTIONS)
    client.get("/set")
    name, good = f"session_id_{store.app_name}", cookie_of(client, store)
    if kind == "other secret":
        other = sessions.SessionMiddleware(
            route(ACTIONS),
            store,
            "another-secret-0123456789abcdef-0123456789",
            app_name=store.app_name,
        )
        other_client = Client(other)
        other_client.get("/set")
        bad = other_client.cookies[name]
    else:
        bad = BAD_COOKIES[kind](good)
    reset(redis_client)
    with caplog.at_level(logging.DEBUG, logger="scalekit.sessions"):
        response = client.request("/read", cookie=f"{name}={bad}")
    assert response.status == 200 and response.text == "{}"
    assert commands(redis_client) == {}
    if kind != "empty":
        assert any("session cookie ignored" in r.message for r in caplog.records)


def test_secret_rotation_keeps_users_signed_in(store):
    old_client, _ = make(store, ACTIONS)
    old_client.get("/set")
    rotated = sessions.SessionMiddleware(route(ACTIONS), store, [NEW_SECRET, SECRET],
                                         app_name=store.app_name)  # fmt: skip
    client = Client(rotated, cookies=dict(old_client.cookies))
    assert client.get("/read").text == '{"n": 1, "user": "ann"}'
    only_new = sessions.SessionMiddleware(
        route(ACTIONS), store, NEW_SECRET, app_name=store.app_name
    )
    assert Client(only_new, cookies=dict(old_client.cookies)).get("/read").text == "{}"


def test_tagged_types_round_trip(store):
    values = {
        "when": datetime.datetime(2026, 11, 21, 5, 30, 1, 123456),
        "aware": datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2026, 11, 21), "at": datetime.time(13, 45, 7),
        "price": decimal.Decimal("19.990"), "raw": b"\x00\xffbytes", "tags": {"a", "b"},
        "pair": (1, "two"), "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "nested": {"t": (1, {2, 3}), "d": [datetime.date(2000, 1, 1)]},
        "looks_tagged": {" set": [1, 2]},
    }  # fmt: skip

    def check(session, environ):
        return repr({key: session[key] for key in sorted(values)} == values)

    client, _ = make(store, {"/set": set_values(**values), "/check": check})
    client.get("/set")
    assert client.get("/check").text == "True"


def test_an_unserializable_value_names_its_key_and_keeps_the_stored_session(store):
    client, _ = make(store, {**ACTIONS, "/bad": set_values(user="bob", handle=object())})
    client.get("/set")
    with pytest.raises(SerializationError, match=r"session key 'handle' holds a object, "):
        client.get("/bad")
    assert client.get("/read").text == '{"n": 1, "user": "ann"}'


def test_the_error_names_the_path_of_a_nested_bad_value(store):
    bad = {"cart": {"items": ["book", "pen", object()]}}
    client, _ = make(store, {"/bad": set_values(**bad), "/keys": set_values(ok={1: "x"})})
    with pytest.raises(SerializationError, match=r"session key 'cart.items\[2\]' holds a object"):
        client.get("/bad")
    with pytest.raises(SerializationError, match=r"session key 'ok' has a non-string dict key 1"):
        client.get("/keys")


def test_a_session_over_the_size_limit_is_not_saved_and_the_old_one_stays(store):
    client, _ = make(store, {**ACTIONS, "/big": set_values(blob="x" * 70_000)})
    client.get("/set")
    with pytest.raises(SerializationError, match=r"is 70,\d{3} bytes, over the 65,536-byte limit"):
        client.get("/big")
    assert client.get("/read").text == '{"n": 1, "user": "ann"}'


def test_a_tampered_stored_payload_is_rejected_not_loaded(store, redis_client, caplog):
    client, _ = make(store, ACTIONS)
    client.get("/set")
    sid = cookie_of(client, store).split(".")[0]
    key = f"scalekit:s:{store.app_name}:{sid}"
    payload = redis_client.hget(key, "d")
    redis_client.hset(key, "d", payload.replace(b'"ann"', b'"eve"'))
    with caplog.at_level(logging.WARNING, logger="scalekit.sessions"):
        assert client.get("/read").text == "{}"
    assert any("bad signature" in r.getMessage() for r in caplog.records)
    assert redis_client.hget(key, "d") != payload  # left in place for inspection


def test_a_payload_copied_from_another_session_is_rejected(store, redis_client):
    first, _ = make(store, {"/set": set_values(user="admin")})
    second, _ = make(store, ACTIONS)
    first.get("/set")
    second.get("/set")
    admin_sid = cookie_of(first, store).split(".")[0]
    sid = cookie_of(second, store).split(".")[0]
    admin_payload = redis_client.hget(f"scalekit:s:{store.app_name}:{admin_sid}", "d")
    redis_client.hset(f"scalekit:s:{store.app_name}:{sid}", "d", admin_payload)
    assert second.get("/read").text == "{}"


class Cart:
    def __init__(self, items):
        self.items = items

    def __eq__(self, other):
        return isinstance(other, Cart) and other.items == self.items


def test_pickle_only_when_opted_in(store):
    client, _ = make(store, {"/set": set_values(cart=Cart(["x"])),
                             "/check": lambda s, e: repr(s.cart == Cart(["x"]))},
                     serializer="pickle")  # fmt: skip
    client.get("/set")
    assert client.get("/check").text == "True"
    json_app = sessions.SessionMiddleware(route(ACTIONS), store, SECRET, app_name=store.app_name)
    assert Client(json_app, cookies=dict(client.cookies)).get("/read").text == "{}"


def test_current_outside_a_request_is_a_lookup_error():
    with pytest.raises(LookupError, match="no session here"):
        sessions.current()


def test_with_session_decorates_one_view(store):
    @sessions.with_session(store, SECRET, app_name=store.app_name)
    def view(environ, start_response):
        session = environ["scalekit.session"]
        session.visits = (session.visits or 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(session.visits).encode()]

    client = Client(view)
    assert [client.get("/").text for _ in range(3)] == ["1", "2", "3"]
    assert view.__name__ == "view"


def test_start_response_called_from_the_body_iterator_still_saves(store):
    def lazy(environ, start_response):
        sessions.current().user = "late"
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"ok"

    app = sessions.SessionMiddleware(lazy, store, SECRET, app_name=store.app_name)
    client = Client(app)
    assert client.get("/").header("Set-Cookie")
    reader = Client(
        sessions.SessionMiddleware(route(ACTIONS), store, SECRET, app_name=store.app_name),
        cookies=client.cookies,
    )
    assert reader.get("/read").text == '{"user": "late"}'


def test_store_by_url_and_bad_options(redis_url, app_name):
    app = sessions.SessionMiddleware(route(ACTIONS), redis_url, SECRET, app_name=app_name)
    client = Client(app)
    client.get("/set")
    assert client.get("/read").text == '{"n": 1, "user": "ann"}'
    with pytest.raises(ConfigError, match="secret is required"):
        sessions.SessionMiddleware(route(ACTIONS), redis_url, "", app_name=app_name)
    with pytest.raises(ConfigError, match="on_store_error"):
        sessions.SessionMiddleware(route(ACTIONS), redis_url, SECRET, on_store_error="ignore")
    with pytest.raises(ConfigError, match="samesite"):
        sessions.SessionMiddleware(route(ACTIONS), redis_url, SECRET, samesite="lax")


def test_an_app_that_restarts_its_response_saves_once(store, redis_client):
    def error_page(environ, start_response):
        sessions.current().user = "x"
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("rendering failed")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                           sys.exc_info())  # fmt: skip
        return [b"error page"]

    app = sessions.SessionMiddleware(error_page, store, SECRET, app_name=store.app_name)
    store.load("WarmUpTheConnectionPool")
    reset(redis_client)
    response = Client(app).get("/")
    assert response.status == 500 and response.header("Set-Cookie")
    assert commands(redis_client) == {"evalsha": 1}


def test_each_kind_of_change_is_saved_and_a_missing_pop_writes_nothing(store, redis_client):
    """Requests that set, delete or clear keys are saved; a request that only reads (a pop
    of a key that is not there included) writes nothing."""
    actions = {
        **ACTIONS,
        "/pop-missing": lambda s, e: s.pop("flash", "none"),
        "/pop": lambda s, e: s.pop("user"),
        "/attr": lambda s, e: setattr(s, "user", "bea") or "ok",
        "/delattr": lambda s, e: delattr(s, "user") or "ok",
        "/same": lambda s, e: s.update(n=1) or "ok",
    }
    client, _ = make(store, actions)
    client.get("/set")
    reset(redis_client)
    assert client.get("/pop-missing").text == "none"
    assert client.get("/same").text == "ok"  # set to the value it holds: bytes unchanged
    assert commands(redis_client) == {"hmget": 2}
    assert client.get("/pop").text == "ann"
    assert client.get("/read").text == '{"n": 1}'
    client.get("/attr")
    assert client.get("/read").text == '{"n": 1, "user": "bea"}'
    client.get("/delattr")
    assert client.get("/read").text == '{"n": 1}'
