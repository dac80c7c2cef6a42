"""What clients get in each mode, on a file flag and on a Redis flag."""

from __future__ import annotations

import json
import time

import pytest

from scalekit.core.errors import ConfigError
from scalekit.maintenance import (
    ENVIRON_KEY,
    MaintenanceMiddleware,
    State,
    maintenance_check,
    with_maintenance,
)
from tests.maintenance.conftest import FORM, JSON, call, hello


@pytest.fixture
def site(flag_url, app_name):
    return MaintenanceMiddleware(hello, flag_url, app_name=app_name, cache_seconds=0)


def test_flag_off_passes_every_method(site, flag):
    flag.clear()
    for method in ("GET", "POST", "PUT", "DELETE"):
        response = call(site, "/shop/cart", method)
        assert response.status == 200
        assert response.text == f"app: {method} /shop/cart"


def test_down_answers_503_with_retry_after_and_the_html_page(site, flag):
    flag.write(State("down", "Moving to a new database", retry_after=120))
    for method in ("GET", "POST", "OPTIONS"):
        response = call(site, "/shop/cart", method)
        assert response.status == 503
        assert response.header("Retry-After") == "120"
        assert response.header("Content-Type") == "text/html; charset=utf-8"
        assert response.header("Cache-Control") == "no-store"
        assert "Moving to a new database" in response.text
        assert int(response.header("Content-Length")) == len(response.body)
    head = call(site, "/", "HEAD")
    assert head.status == 503 and head.body == b"" and head.header("Retry-After") == "120"


def test_down_answers_json_to_clients_that_ask_for_it(site, flag):
    flag.write(State("down", "Back soon", retry_after=60))
    response = call(site, "/api/orders", headers=JSON)
    assert response.status == 503
    assert response.header("Content-Type") == "application/json"
    assert json.loads(response.body) == {
        "error": "maintenance", "mode": "down", "message": "Back soon", "retry_after": 60,
        "end": None,
    }  # fmt: skip
    ranked = call(site, "/", headers={"Accept": "text/html;q=0.5, application/json"})
    assert ranked.header("Content-Type") == "application/json"
    browser = call(site, "/", headers={"Accept": "text/html,application/json;q=0.9"})
    assert browser.header("Content-Type").startswith("text/html")


def test_retry_after_is_the_time_left_in_the_window_else_the_default(site, flag):
    flag.write(State("down", end=time.time() + 600))
    assert 598 <= int(call(site).header("Retry-After")) <= 600
    flag.write(State("down"))
    assert call(site).header("Retry-After") == "300"


def test_static_files_are_exempt_when_down(site, flag):
    flag.write(State("down"))
    assert call(site, "/static/css/site.css").status == 200
    assert call(site, "/statics").status == 503


def test_read_only_lets_safe_methods_through_and_refuses_writes(site, flag):
    flag.write(State("read-only", "Read-only during the upgrade", retry_after=30))
    for method in ("GET", "HEAD", "OPTIONS"):
        assert call(site, "/product/7", method).status == 200
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = call(site, "/api/product/7", method, headers=JSON)
        assert response.status == 503
        assert response.header("Retry-After") == "30"
        assert json.loads(response.body)["mode"] == "read-only"


def test_read_only_redirects_html_form_posts_to_the_page(site, flag):
    flag.write(State("read-only", "No orders for ten minutes"))
    response = call(site, "/cart/checkout", "POST", headers=FORM, body=b"qty=1")
    assert response.status == 303
    assert response.header("Location") == "/maintenance"
    page = call(site, "/maintenance")
    assert page.status == 200 and "No orders for ten minutes" in page.text
    multipart = {"Content-Type": "multipart/form-data; boundary=x"}
    assert call(site, "/upload", "POST", headers=multipart).status == 303
    # a script posting a form but asking for JSON gets the 503, not a redirect
    assert call(site, "/cart", "POST", headers={**FORM, **JSON}).status == 503


def test_the_read_only_page_says_browsing_works_until_when_and_links_back(site, flag):
    flag.write(State("read-only", "Database upgrade", end=time.time() + 1800))
    came_from = {"Host": "shop.example", "Referer": "http://shop.example/cart?step=2"}
    posted = call(site, "/cart", "POST", headers={**FORM, **came_from}, body=b"qty=1")
    assert (posted.status, posted.header("Location")) == (303, "/maintenance")
    page = call(site, "/maintenance", headers=came_from)  # a browser keeps the Referer
    assert page.status == 200 and page.header("Retry-After") is None
    assert "Read-only for maintenance" in page.text and "Down" not in page.text
    assert "Database upgrade" in page.text and "You can still browse" in page.text
    assert "in about 30 minutes" in page.text and "seconds" not in page.text
    assert 'href="/cart"' in page.text
    for referer in ("http://evil.example/cart", "http://shop.example/maintenance", ""):
        page = call(site, "/maintenance", headers={**came_from, "Referer": referer})
        assert 'href="/"' in page.text
    refused = call(site, "/cart", "PUT", headers={"Accept": "text/html", **came_from})
    assert refused.status == 503 and 1795 <= int(refused.header("Retry-After")) <= 1800
    assert "You can still browse" in refused.text and 'href="/cart"' in refused.text


def test_the_down_page_says_down_and_when_to_come_back(site, flag):
    flag.write(State("down", end=time.time() + 2 * 3600))
    response = call(site, "/cart", headers={"Referer": "http://testserver/"})
    assert response.status == 503 and "Down for maintenance" in response.text
    assert "in about 2 hours" in response.text and "browse" not in response.text
    assert "href=" not in response.text  # nothing on the site to go back to
    flag.write(State("down", retry_after=90))
    assert call(site).text.count("try again") == 1  # the default message does not repeat it
    assert "Please try again in about 2 minutes." in call(site).text


@pytest.mark.parametrize("script", ["//evil.example", "/\\evil.example", "https://evil.example",
                                    "/app\r\nSet-Cookie: a=1", "/app?x", "/app/"])  # fmt: skip
def test_the_redirect_never_leaves_the_site_whatever_script_name_holds(site, flag, script):
    flag.write(State("read-only"))
    response = call(_with_script(site, script), "/cart", "POST", headers=FORM)
    location = response.header("Location")
    assert response.status == 303 and location.startswith("/") and location[1] not in "/\\"
    assert location in ("/maintenance", "/app/maintenance")


def _with_script(app, script):
    def scripted(environ, start_response):
        return app({**environ, "SCRIPT_NAME": script}, start_response)

    return scripted


@pytest.mark.parametrize(
    "setting",
    [{"page_url": "/down\r\nSet-Cookie: a=1"}, {"page_url": "//evil.example/"},
     {"bypass_header": "X-Bypass\r\nX-Evil"}, {"bypass_cookie": "sk\r\nSet-Cookie: a=1"}],
)  # fmt: skip
def test_cr_lf_in_a_configured_header_value_is_refused_at_configuration(flag_url, setting):
    with pytest.raises(ConfigError):
        MaintenanceMiddleware(hello, flag_url, secret="s" * 32, **setting)


def test_the_page_url_is_a_503_when_down_and_the_apps_when_off(site, flag):
    flag.write(State("down", "Gone fishing"))
    response = call(site, "/maintenance")
    assert response.status == 503 and "Gone fishing" in response.text
    flag.clear()
    assert call(site, "/maintenance").text == "app: GET /maintenance"


def test_the_app_sees_the_active_state_for_a_banner(flag_url, app_name, flag):
    seen = []

    def banner(environ, start_response):
        seen.append(environ.get(ENVIRON_KEY))
        return hello(environ, start_response)

    site = MaintenanceMiddleware(banner, flag_url, app_name=app_name, cache_seconds=0)
    flag.write(State("read-only", "Upgrade"))
    call(site)
    flag.clear()
    call(site)
    assert seen[0].mode == "read-only" and seen[0].message == "Upgrade" and seen[1] is None


def test_a_custom_page_file_with_placeholders(tmp_path, flag_url, app_name, flag):
    page = tmp_path / "503.html"
    page.write_text("<h1>Closed</h1><p>{{message}}</p><p>{{retry_after}}</p>")
    site = MaintenanceMiddleware(hello, flag_url, app_name=app_name, page=str(page),
                                 cache_seconds=0)  # fmt: skip
    flag.write(State("down", "<b>soon</b>", retry_after=9))
    assert call(site).text == "<h1>Closed</h1><p>&lt;b&gt;soon&lt;/b&gt;</p><p>9</p>"
    with pytest.raises(ConfigError, match=r"missing\.html"):
        MaintenanceMiddleware(hello, flag_url, page=str(tmp_path / "missing.html"))


def test_the_decorator_guards_one_view(flag_url, app_name, flag):
    @with_maintenance(flag_url, app_name=app_name, cache_seconds=0)
    def save(environ, start_response):
        """Saves things."""
        return hello(environ, start_response)

    assert save.__doc__ == "Saves things."
    flag.write(State("read-only"))
    assert call(save, "/save", "GET").status == 200
    assert call(save, "/save", "POST").status == 503
    assert call(hello, "/other", "POST").status == 200  # undecorated views are untouched


def test_the_bare_decorator_reads_the_flag_url_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALEKIT_MAINTENANCE_FLAG", f"file://{tmp_path}/flag")

    @with_maintenance
    def view(environ, start_response):
        return hello(environ, start_response)

    (tmp_path / "flag").write_text('{"mode": "down"}')
    assert call(view).status == 503


def test_the_former_decorator_name_still_works_and_warns(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALEKIT_MAINTENANCE_FLAG", f"file://{tmp_path}/flag")
    with pytest.warns(DeprecationWarning, match="with_maintenance"):

        @maintenance_check
        def view(environ, start_response):
            return hello(environ, start_response)

    with pytest.warns(DeprecationWarning, match="with_maintenance"):
        checked = maintenance_check(cache_seconds=0)(hello)
    (tmp_path / "flag").write_text('{"mode": "down"}')
    assert call(view).status == 503 and call(checked).status == 503


def test_bad_settings_are_config_errors(flag_url, monkeypatch):
    monkeypatch.delenv("SCALEKIT_MAINTENANCE_FLAG", raising=False)
    with pytest.raises(ConfigError, match="SCALEKIT_MAINTENANCE_FLAG"):
        MaintenanceMiddleware(hello)
    with pytest.raises(ConfigError, match=r"memcached URL.*a maintenance flag is file:"):
        MaintenanceMiddleware(hello, "memcache://localhost:11211")
    with pytest.raises(ConfigError, match="page_url"):
        MaintenanceMiddleware(hello, flag_url, page_url="maintenance")
    with pytest.raises(ConfigError, match="not an address"):
        MaintenanceMiddleware(hello, flag_url, allow=["10.0.0.0/33"])
    with pytest.raises(ConfigError, match="32 bytes"):
        MaintenanceMiddleware(hello, flag_url, secret="short")
