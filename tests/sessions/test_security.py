"""Attacks on the session layer, on a real Redis: cookie encodings, ids of gone records."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from scalekit import sessions
from scalekit.core.errors import ConfigError
from tests.sessions.apps import read_all, route, set_values
from tests.wsgi import Client

SECRET = "test-secret-0123456789abcdef-0123456789"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def store(redis_url, app_name):
    opened = sessions.open_store(redis_url, app_name=app_name)
    yield opened
    opened.close()


def make(store, actions, **options):
    app = sessions.SessionMiddleware(
        route(actions), store, SECRET, app_name=store.app_name, **options
    )
    return Client(app)


def cookie_name(store):
    return f"session_id_{store.app_name}"


def spare_bit_variants(value: str) -> list[str]:
    """The other spellings of ``value``'s signature: its last character's 2 spare bits set."""
    last = ALPHABET.index(value[-1])
    return [value[:-1] + ALPHABET[last | bits] for bits in (1, 2, 3)]


def test_only_the_canonical_cookie_encoding_verifies(store, caplog):
    client = make(store, {"/set": set_values(user="ann"), "/read": read_all})
    client.get("/set")
    good = client.cookies[cookie_name(store)]
    signature = good.split(".")[1]
    variants = spare_bit_variants(good)
    for variant in variants:  # the same 32 signature bytes, spelled differently
        assert base64.urlsafe_b64decode(variant.split(".")[1] + "=") == base64.urlsafe_b64decode(
            signature + "="
        )
    for variant in variants:
        with caplog.at_level(logging.DEBUG, logger="scalekit.sessions"):
            response = client.request("/read", cookie=f"{cookie_name(store)}={variant}")
        assert response.status == 200 and response.text == "{}"
    assert any("non-canonical" in r.getMessage() for r in caplog.records)
    assert client.request("/read", cookie=f"{cookie_name(store)}={good}").text == '{"user": "ann"}'


def test_session_id_is_none_once_the_record_is_gone(store):
    def report(session, environ):
        return {"id": session.session_id, "data": dict(session)}

    client = make(store, {"/set": set_values(user="ann"), "/id": report})
    client.get("/set")
    sid = client.cookies[cookie_name(store)].split(".")[0]
    assert json.loads(client.get("/id").text) == {"id": sid, "data": {"user": "ann"}}
    store.delete(sid)  # signed out elsewhere, expired, or removed by sessions2trash
    assert json.loads(client.get("/id").text) == {"id": None, "data": {}}


def test_session_id_of_a_new_session_is_none_until_it_is_stored(store):
    seen = []

    def report(session, environ):
        seen.append(session.session_id)
        session.user = "ann"
        seen.append(session.session_id)
        return "ok"

    client = make(store, {"/new": report, "/read": read_all})
    client.get("/new")
    assert seen == [None, None]
    assert json.loads(client.get("/read").text) == {"user": "ann"}


@pytest.mark.parametrize(
    "secret",
    ["new-secret", ["new-secret", "previous-secret"], [SECRET, "gunicorn-test-secret"]],
)
def test_a_short_or_placeholder_secret_is_refused_naming_the_fix(store, secret):
    for build in (
        lambda: sessions.SessionMiddleware(read_all, store, secret),
        lambda: sessions.with_session(store, secret)(read_all),
    ):
        with pytest.raises(ConfigError, match=r"at least 32 bytes") as caught:
            build()
        assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in str(caught.value)
