"""A secret planted in each place a ticket records data never reaches the stored ticket."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections import OrderedDict, defaultdict, namedtuple
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask, request
from pydal import DAL, Field
from werkzeug.test import EnvironBuilder

from scalekit import sessions
from scalekit.tickets import FolderStore, TicketMiddleware

Login = namedtuple("Login", "user password")


@dataclass
class Settings:
    note: str
    password: str


def failing(plant, secret):
    """A WSGI app that keeps what ``plant(environ, secret)`` returns in a local, and fails."""

    def app(environ, start_response):
        planted = plant(environ, secret)  # noqa: F841 (what the ticket must scrub)
        raise RuntimeError("the request failed")

    return app


def ordered_dict(environ, secret):
    return OrderedDict(user="bob", password=secret)


def default_dict(environ, secret):
    return defaultdict(list, {"api_token": secret})


def pydal_row(environ, secret):
    db = DAL("sqlite:memory")
    db.define_table("account", Field("name"), Field("password"))
    db.account.insert(name="bob", password=secret)
    row = db(db.account).select().first()
    db.close()
    return row


def dataclass_repr(environ, secret):
    return Settings("x" * 300, secret)  # longer than a repr is shown


def namedtuple_repr(environ, secret):
    return Login("bob", secret)


def json_body(environ, secret):
    return json.dumps({"note": "y" * 300, "password": secret}).encode()


def json_message(environ, secret):
    raise ValueError("rejected " + json.dumps({"user": "bob", "token": secret}))


def environment(environ, secret):
    return os.environ  # the test sets PLANTED_DB_PASSWORD


def reused_value(environ, secret):
    password = secret
    raise ValueError(f"no account for {password[::-1][::-1]}")


def bearer_header(environ, secret):
    environ["HTTP_X_UPSTREAM"] = f"Bearer {secret}"


def session_repr(environ, secret):
    session = environ["scalekit.session"]
    session["password"] = secret
    return session


def flask_app() -> Flask:
    app = Flask("planted")
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.post("/")
    def login():
        form = request.form  # noqa: F841 (a werkzeug MultiDict)
        raise RuntimeError("the login failed")

    return app


KINDS = {
    "OrderedDict": ordered_dict,
    "defaultdict": default_dict,
    "pydal Row": pydal_row,
    "dataclass": dataclass_repr,
    "namedtuple": namedtuple_repr,
    "JSON body": json_body,
    "JSON in the message": json_message,
    "os.environ": environment,
    "a secret's value elsewhere": reused_value,
    "bearer under any header": bearer_header,
    "Session": session_repr,
    "Flask request.form": None,
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_planted_secret_is_nowhere_in_the_stored_ticket(kind, tmp_path, monkeypatch):
    secret = f"planted-{secrets.token_hex(8)}"
    monkeypatch.setenv("PLANTED_DB_PASSWORD", secret)
    store = FolderStore(tmp_path / "errors")
    app = flask_app().wsgi_app if kind == "Flask request.form" else failing(KINDS[kind], secret)
    if kind == "Session":
        app = sessions.SessionMiddleware(app, f"file://{tmp_path}/sessions", secrets.token_hex(32))
    environ = EnvironBuilder(method="POST", data={"password": secret}).get_environ()
    status = []
    TicketMiddleware(app, store, app_name="shop")(environ, lambda *args: status.append(args[0]))
    [path] = list(store.pending())
    stored = Path(path).read_bytes()
    assert status == ["500 Internal Server Error"] and json.loads(stored)["frames"]
    assert secret.encode() not in stored


def test_scrubbing_keeps_errors_readable_and_stays_fast_on_hostile_text(tmp_path):
    store = FolderStore(tmp_path / "errors")

    def app(environ, start_response):
        body = "a." * 500_000 + "password='" * 50_000  # noqa: F841 (worst cases for a regex)
        raise KeyError("missing")

    environ = EnvironBuilder().get_environ()
    started = time.monotonic()
    TicketMiddleware(app, store)(environ, lambda *args: None)
    assert time.monotonic() - started < 5
    [path] = list(store.pending())
    ticket = json.loads(Path(path).read_bytes())
    assert ticket["error"]["traceback"].endswith("KeyError: 'missing'\n")
