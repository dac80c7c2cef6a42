"""A real py4web app (its routing, its Session fixture) keeping its sessions in each store.

py4web hands its storage the session cookie's value as bytes on every request and writes
with ``set(uuid, json, expiration)``; the stores must take both as py4web sends them.
"""

from __future__ import annotations

import json

import pytest
from py4web import Session

from tests.sessions.apps import mount_py4web
from tests.wsgi import Client

SECRET = "Py4web-Test:S3cret_9f2C!x7Qm#Lk2Zr8&Wd4Ty"  # strong enough for py4web


@pytest.fixture
def py4web_app(store, app_name, monkeypatch):
    """``/<app_name>/count``: a py4web action counting visits in a session kept in ``store``."""
    session = Session(secret=SECRET, expiration=600, storage=store)

    def count():
        session["count"] = session.get("count", 0) + 1
        return f"count {session['count']}"

    return mount_py4web(app_name, "count", session, count, monkeypatch)


def test_a_py4web_session_lives_in_the_store(py4web_app, store, app_name):
    path = f"/{app_name}/count"
    assert [py4web_app.get(path).text for _ in range(3)] == ["count 1", "count 2", "count 3"]
    assert Client(py4web_app.app).get(path).text == "count 1"  # another browser
    key = py4web_app.cookies[f"{app_name}_session"]
    assert json.loads(store.get(key))["count"] == 3


@pytest.mark.parametrize(
    "forged", ["../../etc/passwd", "x" * 300, "zoë-6f1c1e3a-54b2-4b64", "a;b", "%00"]
)
def test_a_forged_py4web_cookie_reads_as_no_session(py4web_app, store, app_name, forged):
    path = f"/{app_name}/count"
    py4web_app.get(path)  # a real session, which the forged cookie must not disturb
    real = dict(py4web_app.cookies)
    response = Client(py4web_app.app).get(path, cookie=f"{app_name}_session={forged}")
    assert response.status == 200 and response.text == "count 1"
    assert forged not in (response.header("Set-Cookie") or "")
    assert Client(py4web_app.app, dict(real)).get(path).text == "count 2"
