"""Operators get through maintenance by address (X-Forwarded-For only from trusted proxies)
or by a secret header or cookie; nobody else does."""

from __future__ import annotations

import time

import pytest

from scalekit.maintenance import MaintenanceMiddleware, State
from tests.maintenance.conftest import call, hello

SECRET = "let-the-operators-in-0123456789-abcdef"
PROXY, OFFICE, STRANGER = "10.0.0.5", "198.51.100.23", "203.0.113.9"


@pytest.fixture
def site(tmp_path, app_name):
    url = f"file://{tmp_path}/flag"
    site = MaintenanceMiddleware(
        hello, url, app_name=app_name, cache_seconds=0, allow=["198.51.100.0/24", "2001:db8::/32"],
        trusted_proxies=["10.0.0.0/8", "fd00::/8"], secret=SECRET,
    )  # fmt: skip
    site.maintenance.flag.write(State("down"))
    return site


def test_an_allowed_address_connecting_directly_passes(site):
    assert call(site, remote=OFFICE).status == 200
    assert call(site, remote="2001:db8::7").status == 200
    assert call(site, remote="::ffff:198.51.100.23").status == 200  # v4-mapped v6
    assert call(site, remote=STRANGER).status == 503


def test_forwarded_for_is_honoured_from_a_trusted_proxy(site):
    assert call(site, remote=PROXY, headers={"X-Forwarded-For": OFFICE}).status == 200
    chain = {"X-Forwarded-For": f"{OFFICE}, 10.1.2.3"}  # two proxies of ours
    assert call(site, remote=PROXY, headers=chain).status == 200
    assert call(site, remote="fd00::1", headers={"X-Forwarded-For": OFFICE}).status == 200
    assert call(site, remote=PROXY, headers={"X-Forwarded-For": STRANGER}).status == 503


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(site):
    spoofed = {"X-Forwarded-For": OFFICE}
    assert call(site, remote=STRANGER, headers=spoofed).status == 503


def test_the_right_most_untrusted_address_is_the_client(site):
    # the client wrote the office's address itself; our proxy appended the real one
    spoofed = {"X-Forwarded-For": f"{OFFICE}, {STRANGER}"}
    assert call(site, remote=PROXY, headers=spoofed).status == 503
    garbage = {"X-Forwarded-For": f"{OFFICE}, not-an-ip"}
    assert call(site, remote=PROXY, headers=garbage).status == 503
    assert call(site, remote="", headers={"X-Forwarded-For": OFFICE}).status == 503


def test_the_allowed_proxy_itself_is_not_an_operator(site):
    assert call(site, remote=PROXY).status == 503


def test_the_secret_header_passes_and_grants_a_signed_expiring_cookie(site):
    granted = call(site, headers={"X-Maintenance-Bypass": SECRET})
    assert granted.status == 200
    set_cookie = granted.header("Set-Cookie")
    assert set_cookie.startswith("scalekit_maintenance=") and "Max-Age=43200" in set_cookie
    assert SECRET not in set_cookie and "HttpOnly" in set_cookie
    assert "private" in granted.header("Cache-Control")
    token = set_cookie.split(";")[0].partition("=")[2]
    with_cookie = call(site, headers={"Cookie": f"a=1; scalekit_maintenance={token}"})
    assert with_cookie.status == 200 and with_cookie.header("Set-Cookie") is None
    assert call(site, headers={"X-Maintenance-Bypass": SECRET[:-1]}).status == 503
    assert call(site, headers={"Cookie": f"other={token}"}).status == 503


def test_the_secret_itself_expired_or_forged_cookies_are_refused(site):
    expired = site.bypass.token(now=time.time() - 43201)
    expiry, _, signature = site.bypass.token().partition(".")
    later = f"{int(expiry) + 10**6}.{signature}"  # a longer life, the same signature
    for value in (SECRET, expired, later, f"{expiry}.", "1" * 40 + ".x", "٣٣.x"):
        assert call(site, headers={"Cookie": f"scalekit_maintenance={value}"}).status == 503


def test_a_token_from_another_secret_is_refused(site, tmp_path, app_name):
    other = MaintenanceMiddleware(hello, f"file://{tmp_path}/flag", app_name=app_name,
                                  cache_seconds=0, secret=SECRET + "-other")  # fmt: skip
    token = other.bypass.token()
    assert call(other, headers={"Cookie": f"scalekit_maintenance={token}"}).status == 200
    assert call(site, headers={"Cookie": f"scalekit_maintenance={token}"}).status == 503


def test_an_address_bypass_grants_no_cookie(site):
    passed = call(site, remote=OFFICE, headers={"X-Maintenance-Bypass": ""})
    assert passed.status == 200 and passed.header("Set-Cookie") is None


def test_without_bypass_settings_nobody_passes(tmp_path, app_name):
    site = MaintenanceMiddleware(hello, f"file://{tmp_path}/f", app_name=app_name,
                                 cache_seconds=0)  # fmt: skip
    site.maintenance.flag.write(State("down"))
    assert call(site, remote="127.0.0.1", headers={"X-Maintenance-Bypass": ""}).status == 503
