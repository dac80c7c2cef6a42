"""Overlapping requests of one session, on every store: nothing lost, locks that behave."""

from __future__ import annotations

import json
import threading
import time

import pytest

from scalekit import sessions
from tests.sessions.apps import read_all, route, set_values
from tests.wsgi import Client

SECRET = "concurrency-secret-0123456789abcdef-0123"


def overlapping(app, cookies, paths):
    """Run one request per path at the same time, all with the same cookies."""
    responses, errors = {}, []

    def run(path):
        try:
            responses[path] = Client(app, cookies=dict(cookies)).get(path)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    return responses


def test_overlapping_requests_changing_different_keys_keep_both(store):
    both_loaded = threading.Barrier(2, timeout=10)

    def change(key):
        def action(session, environ):
            session.get("seed")  # load now, before the other request saves
            both_loaded.wait()
            if key == "drop":
                del session["seed"]
            else:
                session[key] = key.upper()
            return "ok"

        return action

    actions = {"/seed": set_values(seed=1, keep="yes"), "/read": read_all,
               "/a": change("a"), "/b": change("b")}  # fmt: skip
    app = sessions.SessionMiddleware(route(actions), store, SECRET, app_name=store.app_name)
    client = Client(app)
    client.get("/seed")
    overlapping(app, client.cookies, ["/a", "/b"])
    assert client.get("/read").text == '{"a": "A", "b": "B", "keep": "yes", "seed": 1}'
    actions["/drop"] = change("drop")
    overlapping(app, client.cookies, ["/drop", "/a"])
    assert client.get("/read").text == '{"a": "A", "b": "B", "keep": "yes"}'


def counter_app(store, pause, **options):
    spans = []

    def increment(session, environ):
        value = session.get("n", 0)  # in locking mode, this waits for the lock
        started = time.monotonic()
        time.sleep(pause)
        session.n = value + 1
        spans.append((started, time.monotonic()))
        return "ok"

    actions = {"/inc": increment, "/read": read_all, "/seed": set_values(n=0)}
    app = sessions.SessionMiddleware(
        route(actions), store, SECRET, app_name=store.app_name, **options
    )
    return app, spans


def test_locking_mode_serializes_requests_of_one_session(store):
    app, spans = counter_app(store, 0.3, lock=True, lock_timeout=10)
    client = Client(app)
    client.get("/seed")
    overlapping(app, client.cookies, ["/inc", "/inc"])
    first, second = sorted(spans)
    assert second[0] >= first[1]  # the second started only after the first had finished
    assert client.get("/read").text == '{"n": 2}'


def test_without_locking_the_same_key_is_last_writer_wins(store):
    app, _ = counter_app(store, 0.3)
    client = Client(app)
    client.get("/seed")
    overlapping(app, client.cookies, ["/inc", "/inc"])
    assert client.get("/read").text == '{"n": 1}'


def test_a_crashed_holders_lock_expires(store):
    app, _ = counter_app(store, 0, lock=True, lock_timeout=5)
    client = Client(app)
    client.get("/seed")
    sid = next(iter(client.cookies.values())).split(".")[0]
    assert store.try_lease(sid, "worker-that-died", 1)
    started = time.monotonic()
    assert client.get("/inc").status == 200
    assert 0.5 < time.monotonic() - started < 5
    assert client.get("/read").text == '{"n": 1}'


def test_the_lock_is_released_when_the_handler_raises(store):
    def fail(session, environ):
        session.n = 99
        raise RuntimeError("handler bug")

    app, _ = counter_app(store, 0, lock=True, lock_timeout=5)
    failing = sessions.SessionMiddleware(route({"/fail": fail}), store, SECRET,
                                         app_name=store.app_name, lock=True)  # fmt: skip
    client = Client(app)
    client.get("/seed")
    with pytest.raises(RuntimeError, match="handler bug"):
        Client(failing, cookies=dict(client.cookies)).get("/fail")
    started = time.monotonic()
    client.get("/inc")
    assert time.monotonic() - started < 0.5
    assert client.get("/read").text == '{"n": 1}'


def test_waiting_for_a_lock_is_bounded(store):
    app, _ = counter_app(store, 0, lock=True, lock_timeout=0.5)
    client = Client(app)
    client.get("/seed")
    sid = next(iter(client.cookies.values())).split(".")[0]
    assert store.try_lease(sid, "long-request", 30)
    started = time.monotonic()
    response = client.get("/inc")
    assert response.status == 503 and response.header("Retry-After") == "5"
    assert time.monotonic() - started < 3
    store.release_lease(sid, "long-request")
    assert client.get("/read").text == '{"n": 0}'


def test_current_is_per_thread_in_a_threaded_server(store):
    seen = {}
    gate = threading.Barrier(4, timeout=10)

    def who(session, environ):
        session.me = environ["PATH_INFO"]
        gate.wait()  # all four requests are in flight at once
        seen[environ["PATH_INFO"]] = sessions.current().me
        return "ok"

    paths = [f"/user{i}" for i in range(4)]
    app = sessions.SessionMiddleware(route(dict.fromkeys(paths, who)), store, SECRET,
                                     app_name=store.app_name)  # fmt: skip
    overlapping(app, {}, paths)
    assert seen == {path: path for path in paths}


WRITERS, REQUESTS = 6, 100


def test_parallel_writers_of_one_session_lose_no_key_and_get_no_error(store):
    """One browser, six tabs, each request writing its own key (the issue's load): every
    request succeeds and every key is there afterwards."""

    def write(session, environ):
        session[environ["PATH_INFO"][1:]] = 1
        return "ok"

    start = threading.Barrier(WRITERS, timeout=10)
    keys = [f"w{w}r{r}" for w in range(WRITERS) for r in range(REQUESTS)]
    actions = {"/seed": set_values(seed=1), "/read": read_all, **{f"/{k}": write for k in keys}}
    app = sessions.SessionMiddleware(route(actions), store, SECRET, app_name=store.app_name)
    client = Client(app)
    client.get("/seed")
    statuses, started = [], time.monotonic()

    def tab(w):
        browser = Client(app, cookies=dict(client.cookies))
        start.wait()
        statuses.extend(browser.get(f"/w{w}r{r}").status for r in range(REQUESTS))

    threads = [threading.Thread(target=tab, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    errors = [status for status in statuses if status != 200]
    assert len(statuses) == WRITERS * REQUESTS and not errors, f"{len(errors)} errors"
    stored = json.loads(client.get("/read").text)
    assert sorted(set(keys) - set(stored)) == [] and stored["seed"] == 1
    assert elapsed < 30, f"{elapsed:.1f}s"


@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_a_change_that_lost_every_attempt_is_an_error_under_either_policy(store, policy):
    """fail_open covers a store that is down, not a lost write: it is a 409, never a 200."""

    def mine(session, environ):
        session.get("seed")  # loaded; now another request of this browser saves first
        assert Client(app, cookies=dict(client.cookies)).get("/theirs").status == 200
        session.mine = 1
        return "ok"

    actions = {"/seed": set_values(seed=1), "/read": read_all, "/mine": mine,
               "/theirs": set_values(theirs=1)}  # fmt: skip
    app = sessions.SessionMiddleware(route(actions), store, SECRET, app_name=store.app_name,
                                     on_store_error=policy, conflict_retries=1)  # fmt: skip
    client = Client(app)
    client.get("/seed")
    response = client.get("/mine")
    assert response.status == 409 and b"not saved" in response.body
    assert response.header("Set-Cookie") is None
    assert client.get("/read").text == '{"seed": 1, "theirs": 1}'
