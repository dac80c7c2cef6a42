"""A page built from the session carries ``Vary: Cookie``, so no shared cache serves it to
another user; a page that never used the session does not vary (it stays cacheable)."""

from __future__ import annotations

import pytest

from scalekit import sessions
from tests.sessions.apps import set_values
from tests.wsgi import Client

SECRET = "vary-secret-0123456789abcdef-0123"
pytestmark = pytest.mark.parametrize("store_kind", ["file", "redis"])  # any store: one rule


def page(use, headers=()):
    """A WSGI app answering ``use(session)`` with the app's own ``headers``."""

    def application(environ, start_response):
        body = str(use(sessions.current())).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), *headers])
        return [body]

    return application


def client_for(store, app, signed_in: bool) -> Client:
    wrapped = sessions.SessionMiddleware(app, store, SECRET, app_name=store.app_name)
    client = Client(wrapped)
    if signed_in:
        setter = page(lambda session: set_values(user="ann")(session, {}))
        Client(sessions.SessionMiddleware(setter, store, SECRET, app_name=store.app_name),
               client.cookies).get("/")  # fmt: skip
        assert client.cookies
    return client


@pytest.mark.parametrize("signed_in", [True, False], ids=["signed-in", "anonymous"])
def test_a_page_that_read_the_session_varies_on_cookie(store, signed_in):
    client = client_for(store, page(lambda session: f"hello {session.user}"), signed_in)
    response = client.get("/")
    assert response.text == ("hello ann" if signed_in else "hello None")
    assert response.header("Set-Cookie") is None  # nothing saved: only the Vary
    assert response.header("Vary") == "Cookie"
    assert response.header("Cache-Control") is None  # the app's caching rules are its own


def test_the_apps_vary_is_kept_and_cookie_added_once(store):
    for app_vary, expected in [("Accept", "Accept, Cookie"), ("cookie", "cookie"), ("*", "*")]:
        app = page(lambda session: session.user, [("Vary", app_vary)])
        response = client_for(store, app, signed_in=True).get("/")
        assert response.all("Vary") == [expected]


def test_a_page_that_never_used_the_session_does_not_vary(store):
    response = client_for(store, page(lambda session: "static text"), signed_in=True).get("/")
    assert response.header("Vary") is None and response.header("Cache-Control") is None
