"""scalekit.wsgi.guard and scalekit.wsgi.server: who gets into an admin page, its headers,
its form tokens, and the small server that serves it without ever showing a traceback."""

from __future__ import annotations

import io
import logging
import threading
import time
import urllib.error
import urllib.request

import pytest

from scalekit.core.errors import ConfigError
from scalekit.wsgi.guard import MAX_FORM, Guard, admin_page, form_fields
from scalekit.wsgi.server import open_server, url_of

TOKEN = "guard-token-0123456789"


def environ(remote="10.0.0.1", query="", **headers) -> dict:
    made = {"REMOTE_ADDR": remote, "QUERY_STRING": query, "SCRIPT_NAME": "/admin/x"}
    made.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    return made


def test_a_guard_needs_addresses_or_a_token_and_names_its_owner():
    with pytest.raises(ConfigError, match="MyViewer needs allowed="):
        Guard("x", "MyViewer")
    with pytest.raises(ConfigError, match=r"MyViewer allowed=.*nowhere"):
        Guard("x", "MyViewer", allowed=["nowhere"])


def test_the_token_once_in_the_query_becomes_a_cookie_for_the_mount_point():
    guard = Guard("things", "V", token=TOKEN)
    assert guard.admit(environ()) is None
    assert guard.admit(environ(query="token=wrong")) is None
    assert guard.admit(environ(authorization=f"Bearer {TOKEN}")) == []
    [(name, cookie)] = guard.admit(environ(query=f"token={TOKEN}"))
    assert name == "Set-Cookie" and cookie.startswith("scalekit_things=") and TOKEN not in cookie
    assert {"Path=/admin/x", "HttpOnly", "SameSite=Strict"} <= set(cookie.split("; "))
    value = cookie.split(";")[0]
    assert guard.admit(environ(cookie=value)) == []
    assert Guard("things", "V", token="other-token").admit(environ(cookie=value)) is None
    assert guard.admit(environ(cookie=value[:-1] + ("A" if value[-1] != "A" else "B"))) is None


def test_addresses_and_networks_get_in_without_a_token():
    guard = Guard("things", "V", allowed=["192.168.5.0/24", "::1"])
    assert guard.admit(environ("192.168.5.7")) == [] and guard.admit(environ("::1")) == []
    assert guard.admit(environ("192.168.6.7")) is None and guard.admit(environ("")) is None
    assert guard.admit(environ("192.168.6.7", query="token=")) is None


def test_form_tokens_are_signed_expire_and_are_not_cookies(monkeypatch):
    guard = Guard("things", "V", token=TOKEN)
    form = guard.form_token()
    assert guard.form_ok(form) and not guard.form_ok(None) and not guard.form_ok("")
    assert not guard.form_ok(form + "x") and not guard.form_ok("9999999999.forged")
    assert not Guard("things", "V", token="other-token").form_ok(form)
    cookie = guard.admit(environ(query=f"token={TOKEN}"))[0][1].split(";")[0].split("=", 1)[1]
    assert not guard.form_ok(cookie)  # a cookie is no form token (and the other way round)
    assert guard.admit(environ(cookie=f"scalekit_things={form}")) is None
    shared = Guard("things", "V", allowed=["127.0.0.1"], secret="s" * 32)
    assert Guard("things", "V", allowed=["::1"], secret="s" * 32).form_ok(shared.form_token())
    assert not Guard("things", "V", allowed=["::1"]).form_ok(shared.form_token())
    with_token = Guard("things", "V", token=TOKEN, secret="s" * 32)
    cookie = with_token.admit(environ(query=f"token={TOKEN}"))[0][1].split(";")[0]
    assert with_token.admit(environ(cookie=cookie)) == []
    renewed = Guard("things", "V", token="a-new-token", secret="s" * 32)
    assert renewed.admit(environ(cookie=cookie)) is None  # a new token ends the old cookies
    later = time.time() + guard.max_age + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert not guard.form_ok(form)


def test_an_admin_page_is_escaped_uncached_unframed_and_forms_go_to_itself_only():
    page = admin_page("200 OK", "<b>", "<p>body</p>", ("X-Extra", "1"))
    headers = dict(page.headers)
    assert b"<title>&lt;b&gt;</title>" in page.body and b"<p>body</p>" in page.body
    assert headers["Cache-Control"] == "no-store" and headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer" and headers["X-Extra"] == "1"
    assert "form-action 'none'" in headers["Content-Security-Policy"]
    assert "script-src" not in headers["Content-Security-Policy"]
    with_forms = dict(admin_page("200 OK", "t", "", forms=True).headers)
    assert "form-action 'self'" in with_forms["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("body", "kind", "fields"),
    [
        (b"a=1&b=2&a=3", "application/x-www-form-urlencoded", {"a": "1", "b": "2"}),
        (b"", "", {}),
        (b"a=1", "multipart/form-data; boundary=x", None),
        (b"a=" + b"x" * MAX_FORM, "application/x-www-form-urlencoded", None),
        (b"a=\xff", "application/x-www-form-urlencoded", None),
    ],
)
def test_form_fields_reads_small_urlencoded_bodies_only(body, kind, fields):
    given = {"CONTENT_TYPE": kind, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    assert form_fields(given) == fields


def test_the_server_answers_a_failing_app_with_a_bare_500_and_one_log_line(caplog):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("secret detail")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]

    with open_server(app, "127.0.0.1", 0, name="test viewer", log=logging.getLogger("t")) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            base = url_of(server)
            assert base.startswith("http://127.0.0.1:")
            with caplog.at_level(logging.INFO, logger="t"):
                with urllib.request.urlopen(base + "fine?token=abc") as answer:
                    assert answer.read() == b"fine"
                with pytest.raises(urllib.error.HTTPError) as failed:
                    urllib.request.urlopen(base + "boom")
        finally:
            server.shutdown()
        thread.join()
    assert failed.value.code == 500 and failed.value.read() == b"Internal error\n"
    messages = [record.getMessage() for record in caplog.records]
    assert "GET /fine 200" in messages and "test viewer: GET /boom failed: RuntimeError" in messages
    assert not any("abc" in m or "secret detail" in m for m in messages)
