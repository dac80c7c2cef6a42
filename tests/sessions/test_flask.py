"""``flask.session`` on scalekit's stores (scalekit.sessions.flask): a real Flask app, driven
in-process, as two app instances sharing a store, and under gunicorn with several workers."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from datetime import timedelta

import pytest

from scalekit.core.checks import MAX_TTL
from scalekit.sessions import open_store
from scalekit.sessions.cookies import SessionCookie, new_session_id
from tests.gunicorn import gunicorn
from tests.sessions.apps import SECRET
from tests.sessions.conftest import down_url_for, store_url_for
from tests.sessions.flask_app import make_app
from tests.wsgi import Client


@pytest.fixture(params=["file", "redis"])
def url(request, tmp_path) -> str:
    return store_url_for(request.param, request, tmp_path)


@pytest.fixture
def opened(url, app_name):
    """Opens stores of ``url`` (one per app instance, as separate servers would), closed after."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(contextlib.closing(open_store(url, app_name=app_name)))


def sid(client: Client) -> str:
    return client.cookies["session"].split(".")[0]


def user(client: Client) -> str | None:
    return json.loads(client.get("/me").body)["user"]


def everything(client: Client) -> dict:
    return json.loads(client.get("/all").body)


def post(client: Client, path: str, **options):
    response = client.request(path, "POST", **options)
    assert response.status == 200, response.text
    return response


def test_login_and_logout_round_trip(store):
    client = Client(make_app(store))
    assert user(client) is None and not client.cookies  # a read stores nothing
    post(client, "/set/cart/3/0")
    anonymous = sid(client)
    response = post(client, "/login/ann")
    assert sid(client) != anonymous and store.load(anonymous) is None  # regenerate()
    cookie = response.header("Set-Cookie")
    # permanent by default, for Flask's 31 days cut to the longest TTL every store keeps
    assert {"HttpOnly", "SameSite=Lax", f"Max-Age={MAX_TTL}"} <= set(cookie.split("; "))
    assert "Secure" not in cookie and response.header("Cache-Control") == "private"
    assert everything(client) == {"cart": "3", "user": "ann"}
    signed_in = sid(client)
    response = post(client, "/logout")  # session.clear(): the record and the cookie go
    assert "Max-Age=0" in response.header("Set-Cookie") and not client.cookies
    assert store.load(signed_in) is None and user(client) is None


def test_https_cookies_are_secure_and_flask_config_keys_apply(opened):
    config = {"SESSION_COOKIE_NAME": "shop", "SESSION_COOKIE_SAMESITE": "Strict",
              "SESSION_COOKIE_PATH": "/app", "SESSION_PERMANENT": False}  # fmt: skip
    client = Client(make_app(opened(), config=config))
    parts = post(client, "/login/ann", https=True).header("Set-Cookie").split("; ")
    assert parts[0].startswith("shop=") and "Max-Age" not in "; ".join(parts)
    assert {"Path=/app", "Secure", "HttpOnly", "SameSite=Strict"} <= set(parts)


def test_values_survive_across_app_instances(opened):
    one, two = make_app(opened()), make_app(opened())
    client = Client(one)
    post(client, "/login/ann")
    client.app = two
    assert user(client) == "ann"
    post(client, "/set/theme/dark/0")
    client.app = one
    assert everything(client) == {"theme": "dark", "user": "ann"}


def test_a_forged_or_unsigned_cookie_gets_a_fresh_empty_session(opened):
    app = make_app(opened())
    client = Client(app)
    post(client, "/login/ann")
    real = client.cookies["session"]
    stolen = sid(client)
    for value in (stolen, f"{stolen}.{'A' * 43}", real[:-1] + "B", "garbage"):
        forger = Client(app, cookies={"session": value})
        assert user(forger) is None
        post(forger, "/set/k/v/0")
        assert sid(forger) != stolen  # a new id, never the one the client chose
    assert everything(client) == {"user": "ann"}


def overlapping_writes(apps, client: Client) -> list[int]:
    """``/set/a/1`` and ``/set/b/2`` at once with ``client``'s cookie, one per app; both load
    the session before either saves. Their statuses."""
    statuses = []

    def write(app, key, value):
        statuses.append(
            Client(app, dict(client.cookies)).request(f"/set/{key}/{value}/0", "POST").status
        )

    threads = [threading.Thread(target=write, args=(app, *item))
               for app, item in zip(apps, [("a", "1"), ("b", "2")], strict=True)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return sorted(statuses)


def test_overlapping_requests_writing_different_keys_both_keep_their_change(opened):
    barrier = threading.Barrier(2)
    apps = [make_app(opened(), barrier), make_app(opened(), barrier)]
    client = Client(apps[0])
    post(client, "/login/ann")
    assert overlapping_writes(apps, client) == [200, 200]
    assert everything(client) == {"a": "1", "b": "2", "user": "ann"}


def test_a_change_lost_to_concurrent_writers_is_a_409_never_a_200(opened):
    barrier = threading.Barrier(2)
    apps = [make_app(opened(), barrier, conflict_retries=1) for _ in range(2)]
    client = Client(apps[0])
    post(client, "/login/ann")
    assert overlapping_writes(apps, client) == [200, 409]
    stored = everything(client)
    assert stored.keys() - {"user"} in ({"a"}, {"b"})  # only the winner's change


def test_vary_cookie_whenever_the_session_was_used(opened):
    client = Client(make_app(opened()))
    plain = client.get("/plain")
    assert plain.header("Vary") is None and plain.header("Set-Cookie") is None
    read = client.get("/me")  # used, nothing stored: varies, sets nothing
    assert read.header("Vary") == "Cookie" and read.header("Set-Cookie") is None
    post(client, "/login/ann")
    read = client.get("/me")
    assert read.header("Vary") == "Cookie" and read.header("Set-Cookie") is None
    assert client.get("/plain").header("Vary") is None


def test_permanent_sessions_slide_and_expire_after_the_lifetime(opened):
    config = {"PERMANENT_SESSION_LIFETIME": timedelta(seconds=2)}
    client = Client(make_app(opened(), config=config))
    assert "Max-Age=2" in post(client, "/login/ann").header("Set-Cookie")
    refreshed = []
    for _ in range(5):  # used every 0.6 s for 3 s: it slides past the 2 s lifetime
        time.sleep(0.6)
        response = client.get("/me")
        assert json.loads(response.body)["user"] == "ann"
        refreshed.append(response.header("Set-Cookie"))
    assert any(cookie and "Max-Age=2" in cookie for cookie in refreshed)  # the cookie slides too
    time.sleep(2.3)
    assert user(client) is None  # idle longer than the lifetime: gone


def test_a_session_made_non_permanent_gets_a_browser_cookie(opened):
    client = Client(make_app(opened()))
    post(client, "/login/ann")
    cookie = post(client, "/permanent/0").header("Set-Cookie")
    assert cookie.startswith("session=") and "Max-Age" not in cookie
    assert "Max-Age=" in post(client, "/permanent/1").header("Set-Cookie")
    assert everything(client) == {"user": "ann"}  # permanent, the default, is not stored


def test_nested_changes_are_saved_without_setting_modified(opened):
    client = Client(make_app(opened()))
    post(client, "/cart/tea")
    post(client, "/cart/milk")
    assert everything(client) == {"cart": ["tea", "milk"]}


def test_a_locked_session_is_released_when_the_view_raises(opened):
    client = Client(make_app(opened(), lock=True, lock_timeout=2))
    post(client, "/login/ann")
    assert client.get("/boom").status == 500
    started = time.monotonic()
    assert user(client) == "ann" and time.monotonic() - started < 1  # not waiting for the lock


def test_a_store_that_is_down_answers_503(tmp_path):
    app = make_app(down_url_for("redis", tmp_path), app_name="shop")
    client = Client(app)
    assert client.get("/plain").status == 200  # a request that does not use it is served
    saving = client.request("/login/ann", "POST")  # the save fails: never answered as saved
    assert saving.status == 503 and saving.header("Retry-After") and not client.cookies
    signed = SessionCookie("session", SECRET).value(new_session_id())
    loading = Client(app, {"session": signed}).get("/me")  # the load fails
    assert loading.status == 503 and loading.header("Retry-After")


def fetch(port: int, method: str, path: str, cookie: str | None = None):
    """One request on a fresh connection: the response and its body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    connection.request(method, path, headers={"Cookie": cookie} if cookie else {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, body
    return response, body


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_under_gunicorn_workers_share_sessions_and_overlapping_writes_merge(
    kind, request, tmp_path, app_name
):
    env = {"SCALEKIT_TEST_STORE": store_url_for(kind, request, tmp_path),
           "SCALEKIT_TEST_APP": app_name}  # fmt: skip
    with gunicorn("tests.sessions.flask_app:application", env, workers=2, threads=1) as port:
        response, _ = fetch(port, "POST", "/login/ann")
        cookie = response.getheader("Set-Cookie").split(";")[0]
        results = {}

        def write(key):  # 0.3 s each, at once: the busy sync worker leaves one to the other
            results[key] = json.loads(fetch(port, "POST", f"/set/{key}/1/0.3", cookie)[1])

        threads = [threading.Thread(target=write, args=(key,)) for key in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len({result["pid"] for result in results.values()}) == 2  # both workers
        assert json.loads(fetch(port, "GET", "/all", cookie)[1]) == {
            "a": "1",
            "b": "1",
            "user": "ann",
        }
