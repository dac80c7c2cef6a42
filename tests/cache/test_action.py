"""cache.action: whole WSGI responses, GET/HEAD only, never with cookies or sessions."""

from __future__ import annotations

import time

import pytest

from scalekit import sessions
from scalekit.cache import Cache
from scalekit.core.errors import ConfigError
from scalekit.testing import fresh_app_name
from tests.wsgi import Client


@pytest.fixture
def cache(tmp_path):
    opened = Cache("shop", folder=str(tmp_path / "cache"))
    yield opened
    opened.close()


class Page:
    """A WSGI app that counts its calls; ``headers`` are added to its response."""

    def __init__(self, headers=(), status="200 OK", write_session=False):
        self.calls, self.headers, self.status = 0, list(headers), status
        self.write_session = write_session

    def __call__(self, environ, start_response):
        self.calls += 1
        if self.write_session:
            environ["scalekit.session"]["visits"] = self.calls
        start_response(self.status, [("Content-Type", "text/plain"), *self.headers])
        return [f"page {self.calls} of {environ['PATH_INFO']}".encode()]


def test_get_is_cached_with_client_headers(cache):
    page = Page()
    client = Client(cache.action(time_expire=60, cache_model=cache.ram)(page))
    first = client.get("/a")
    second = client.get("/a")
    assert first.body == second.body == b"page 1 of /a"
    assert page.calls == 1
    assert first.header("Cache-Control") == "public, max-age=60"
    assert second.header("Cache-Control") in ("public, max-age=60", "public, max-age=59")
    assert second.header("Expires").endswith(" GMT")
    assert second.header("Content-Type") == "text/plain"
    assert client.get("/b").body == b"page 2 of /b"  # keyed by path


def test_cached_on_disk_and_private_option(cache):
    page = Page()
    client = Client(cache.action(time_expire=60, cache_model="disk", public=False)(page))
    client.get("/a")
    response = client.get("/a")
    assert page.calls == 1
    assert response.header("Cache-Control") in ("private, max-age=60", "private, max-age=59")


def test_expired_responses_are_recomputed(cache):
    page = Page()
    client = Client(cache.action(time_expire=0.2, cache_model=cache.ram)(page))
    client.get("/a")
    time.sleep(0.3)
    assert client.get("/a").body == b"page 2 of /a"


def test_post_is_never_cached(cache):
    page = Page()
    client = Client(cache.action(time_expire=60, cache_model=cache.ram)(page))
    client.get("/a")
    response = client.request("/a", method="POST")
    assert response.body == b"page 2 of /a"
    assert response.header("Cache-Control") is None
    assert client.request("/a", method="POST").body == b"page 3 of /a"


def test_head_is_cached_apart_from_get(cache):
    page = Page()
    client = Client(cache.action(time_expire=60, cache_model=cache.ram)(page))
    client.request("/a", method="HEAD")
    client.request("/a", method="HEAD")
    client.get("/a")
    assert page.calls == 2


def test_responses_that_set_cookies_are_never_cached(cache):
    page = Page(headers=[("Set-Cookie", "pref=dark; Path=/")])
    client = Client(cache.action(time_expire=60, cache_model=cache.ram)(page))
    first = client.get("/a", cookie="")
    second = client.get("/a", cookie="")
    assert (first.body, second.body) == (b"page 1 of /a", b"page 2 of /a")
    assert first.header("Cache-Control") is None


def test_no_store_and_error_statuses_are_not_cached(cache):
    for page in (
        Page(headers=[("Cache-Control", "no-store")]),
        Page(headers=[("Cache-Control", "private, max-age=60")]),
        Page(status="500 Oops"),
    ):
        client = Client(cache.action(time_expire=60, cache_model=cache.ram)(page))
        client.get("/a")
        assert "public" not in (client.get("/a").header("Cache-Control") or "")
        assert page.calls == 2


@pytest.fixture(params=["disk", "redis"])
def shared_action(request, tmp_path):
    """``shared_action(page, **options)``: the page behind cache.action on a real shared
    backend (disk, Redis), as a test client."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    opened = Cache(fresh_app_name(), folder=str(tmp_path / "cache"), redis=redis_url)
    yield lambda page, **options: Client(
        opened.action(time_expire=60, cache_model=request.param, **options)(page)
    )
    opened.close()


class Private(Page):
    """A page that shows who is asking: the Authorization header and the cookies."""

    def __call__(self, environ, start_response):
        who = environ.get("HTTP_AUTHORIZATION", "") + environ.get("HTTP_COOKIE", "")
        return [b"%s for [%s]" % (b"".join(super().__call__(environ, start_response)),
                                  who.encode())]  # fmt: skip


IDENTIFYING = [
    {"headers": {"Authorization": "Bearer alice-token"}},
    {"cookie": "session=eyJ1c2VyIjoiYWxpY2UifQ"},  # Flask
    {"cookie": "sessionid=alice0123456789"},  # Django
    {"cookie": "session_id_shop=abc; theme=dark"},  # web2py, scalekit
    {"cookie": "theme=dark"},  # any cookie may say who the user is
    {"cookie": "alice-token"},  # a cookie without a name
]


@pytest.mark.parametrize("identity", IDENTIFYING)
def test_requests_that_can_say_who_sends_them_neither_fill_nor_read_the_cache(
    shared_action, identity
):
    page = Private()
    client = shared_action(page)
    private = client.get("/a", **identity)
    assert b"[]" not in private.body
    assert "public" not in (private.header("Cache-Control") or "")
    anonymous = client.get("/a", cookie="")
    assert anonymous.body == b"page 2 of /a for []"  # not the private page
    assert client.get("/a", cookie="").body == anonymous.body  # the anonymous one is cached
    assert client.get("/a", **identity).body.startswith(b"page 3 of /a")  # never served it


def test_allowed_cookies_and_pages_keyed_by_user(shared_action):
    page = Private()
    client = shared_action(page, allow_cookies=("_ga",), user_key=lambda environ:
                           environ.get("HTTP_AUTHORIZATION"))  # fmt: skip
    assert client.get("/a", cookie="_ga=1").body == b"page 1 of /a for [_ga=1]"
    assert client.get("/a", cookie="").body == b"page 1 of /a for [_ga=1]"
    alice = client.get("/a", headers={"Authorization": "alice"}, cookie="")
    assert alice.body == b"page 2 of /a for [alice]"
    assert alice.header("Cache-Control") == "private, max-age=60"
    again = client.get("/a", headers={"Authorization": "alice"}, cookie="")
    assert again.body == alice.body and again.header("Cache-Control").startswith("private,")
    bob = client.get("/a", headers={"Authorization": "bob"}, cookie="")
    assert bob.body == b"page 3 of /a for [bob]"
    assert client.get("/a", cookie="sessionid=x").body == b"page 4 of /a for [sessionid=x]"


def test_views_that_use_the_session_are_never_cached(cache, tmp_path):
    page = Page(write_session=True)
    view = cache.action(time_expire=60, cache_model=cache.ram)(page)
    app = sessions.SessionMiddleware(view, f"file://{tmp_path}/sessions", secret="s" * 32)
    client = Client(app)
    first = client.get("/a")
    assert first.header("Set-Cookie") is not None  # the session middleware set its cookie
    assert "public" not in (first.header("Cache-Control") or "")
    assert client.get("/a").body == b"page 2 of /a"  # with the cookie: bypassed
    assert Client(app).get("/a").body == b"page 3 of /a"  # a new visitor: still not cached


def test_headers_only_without_a_model(cache):
    page = Page()
    client = Client(cache.action(time_expire=30)(page))
    assert client.get("/a").header("Cache-Control") == "public, max-age=30"
    client.get("/a")
    assert page.calls == 2  # web2py: cache_model=None caches on the client only


def test_vary_headers_are_part_of_the_key(cache):
    page = Page()
    client = Client(cache.action(time_expire=60, cache_model=cache.ram)(page))
    client.get("/a", headers={"Accept-Language": "en"})
    client.get("/a", headers={"Accept-Language": "it"})
    client.get("/a", headers={"Accept-Language": "en"})
    assert page.calls == 2


def test_an_unknown_option_such_as_the_former_session_cookies_is_a_config_error(tmp_path):
    cache = Cache("shop", disk=f"file://{tmp_path}")
    with pytest.raises(ConfigError, match="unknown option session_cookies; takes allow_cookies"):
        cache.action(60, "disk", session_cookies=("session_id_",))
