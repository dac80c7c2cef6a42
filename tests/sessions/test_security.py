"""Attacks on the session layer, on a real Redis: cookie encodings, ids of gone records."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest

from scalekit import sessions
from scalekit.core import tagged_json
from scalekit.core.errors import ConfigError
from scalekit.core.signing import Signer
from tests.sessions.apps import SECRET, read_all, route, set_values
from tests.wsgi import Client

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def store(redis_store):
    return redis_store


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


def stored_payload(redis_client, store, sid):
    return redis_client.hget(f"scalekit:s:{store.app_name}:{sid}", "d")


def test_a_payload_put_back_past_the_bound_is_refused(store, redis_client, caplog):
    """A role removed, then the old payload put back by a store writer: refused once it was
    signed more than 1.5 idle timeouts ago, while the session in use keeps loading."""
    actions = {
        "/grant": set_values(user="ann", role="admin"),
        "/demote": lambda session, environ: session.pop("role"),
        "/read": read_all,
    }
    client = make(store, actions, idle_timeout=2)  # signed again after 1 s, refused after 3 s
    client.get("/grant")
    sid = client.cookies[cookie_name(store)].split(".")[0]
    admin = stored_payload(redis_client, store, sid)
    client.get("/demote")
    signed = {stored_payload(redis_client, store, sid)}
    for _ in range(5):  # reads only: the session stays in use
        time.sleep(0.7)
        assert json.loads(client.get("/read").text) == {"user": "ann"}
        signed.add(stored_payload(redis_client, store, sid))
    assert len(signed) >= 3  # signed again, unchanged, as it aged
    redis_client.hset(f"scalekit:s:{store.app_name}:{sid}", "d", admin)
    with caplog.at_level(logging.WARNING, logger="scalekit.sessions"):
        assert client.get("/read").text == "{}"
    assert any("signed" in r.getMessage() and "ago" in r.getMessage() for r in caplog.records)


def test_a_payload_of_the_former_format_loads_and_is_signed_again(store, redis_client):
    """What the previous release stored (``J`` + HMAC of format, id and body + body) loads,
    and the next request signs it with its signing time."""
    client = make(store, {"/set": set_values(user="ann"), "/read": read_all})
    client.get("/set")
    sid = client.cookies[cookie_name(store)].split(".")[0]
    body = tagged_json.ENCODER.encode({"c": time.time(), "d": {"user": "bob"}}).encode()
    signature = Signer(SECRET, "session payload").sign(b"J" + sid.encode() + b"\0" + body)
    redis_client.hset(f"scalekit:s:{store.app_name}:{sid}", "d", b"J" + signature + body)
    assert json.loads(client.get("/read").text) == {"user": "bob"}
    resigned = stored_payload(redis_client, store, sid)
    assert resigned[:1] == b"j" and resigned.endswith(body)
    assert json.loads(client.get("/read").text) == {"user": "bob"}
    assert stored_payload(redis_client, store, sid) == resigned  # fresh: not signed again
