"""``scalekit.frontend.forwarded``: the trusted proxies' X-Forwarded-* or RFC 7239
``Forwarded`` applied to the environ, anybody else's removed; hop-by-hop headers stripped."""

from __future__ import annotations

import time

import pytest

from scalekit.core.errors import ConfigError
from scalekit.frontend.forwarded import FORWARDING_HEADERS, Forwarding, strip_hop_by_hop
from scalekit.wsgi.environ import PEER_KEY

PROXY, CLIENT, STRANGER = "10.0.0.2", "203.0.113.9", "198.51.100.66"
TRUSTED = Forwarding(["10.0.0.0/8", "fd00::/8"])
SPOOFS = {
    "X-Forwarded-For": CLIENT,
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/admin",
    "X-Forwarded-Ssl": "on",
    "X-Forwarded-Protocol": "ssl",
    "X-Url-Scheme": "https",
    "Front-End-Https": "on",
    "X-Real-IP": CLIENT,
    "Forwarded": f"for={CLIENT};proto=https;host=evil.example",
}


def environ(remote: str = PROXY, **headers: str) -> dict:
    """A gunicorn-like environ from peer ``remote`` with ``headers`` (X_Forwarded_For=...)."""
    env = {"REMOTE_ADDR": remote, "REMOTE_PORT": "40123", "wsgi.url_scheme": "http",
           "HTTP_HOST": "app.internal:8000", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
           "REQUEST_METHOD": "GET", "PATH_INFO": "/"}  # fmt: skip
    for name, value in headers.items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def applied(forwarding: Forwarding = TRUSTED, remote: str = PROXY, **headers: str) -> dict:
    env = environ(remote, **headers)
    forwarding.apply(env)
    return env


def seen(env: dict) -> tuple:
    """What the app learns: client, scheme, host, server name and port."""
    keys = ("REMOTE_ADDR", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT")
    return tuple(env.get(key) for key in keys)


def forwarded(env: dict) -> set[str]:
    return FORWARDING_HEADERS & set(env)


# -- from a trusted proxy ------------------------------------------------------------------
def test_a_trusted_proxy_s_x_forwarded_headers_make_the_client_scheme_and_host():
    env = applied(X_Forwarded_For=CLIENT, X_Forwarded_Proto="https",
                  X_Forwarded_Host="shop.example")  # fmt: skip
    assert seen(env) == (CLIENT, "https", "shop.example", "shop.example", "443")
    assert env[PEER_KEY] == PROXY and "REMOTE_PORT" not in env  # the port was the proxy's
    assert env["HTTP_X_FORWARDED_FOR"] == CLIENT  # what was believed stays readable


def test_the_host_s_port_and_the_scheme_s_default_port_make_server_port():
    env = applied(X_Forwarded_Proto="https", X_Forwarded_Host="[2001:db8::1]:8443")
    assert seen(env)[1:] == ("https", "[2001:db8::1]:8443", "[2001:db8::1]", "8443")
    env = applied(X_Forwarded_For=CLIENT, X_Forwarded_Proto="http", Host="shop.example")
    assert seen(env) == (CLIENT, "http", "shop.example", "shop.example", "80")
    env = applied(X_Forwarded_Proto="HTTPS")  # no X-Forwarded-For: the proxy is the client
    assert seen(env) == (PROXY, "https", "app.internal:8000", "app.internal", "8000")


def test_x_forwarded_for_is_read_right_to_left_past_trusted_hops():
    env = applied(X_Forwarded_For=f"1.2.3.4, {CLIENT}, 10.9.9.9", X_Forwarded_Proto="https")
    assert seen(env)[:2] == (CLIENT, "https")
    assert applied(remote="fd00::1", X_Forwarded_For="[2001:db8::5]:4711")["REMOTE_ADDR"] == (
        "2001:db8::5"
    )
    assert applied(X_Forwarded_For="10.0.0.3, 10.0.0.4")["REMOTE_ADDR"] == "10.0.0.3"


def test_proto_and_host_come_from_the_client_s_hop_when_there_is_one_entry_per_hop():
    """Each proxy appended: the entry at the client's position is what the client used;
    otherwise the right-most (our nearest proxy's) counts."""
    env = applied(X_Forwarded_For=f"1.2.3.4, {CLIENT}, 10.9.9.9",
                  X_Forwarded_Proto="http, https, http",
                  X_Forwarded_Host="a.example, shop.example, inner.example")  # fmt: skip
    assert seen(env)[:3] == (CLIENT, "https", "shop.example")
    env = applied(X_Forwarded_For=f"{CLIENT}, 10.9.9.9", X_Forwarded_Proto="https",
                  X_Forwarded_Host="x.example, shop.example, other.example")  # fmt: skip
    assert seen(env)[1:3] == ("https", "other.example")


def test_rfc_7239_forwarded_is_read_when_no_x_forwarded_header_came():
    env = applied(Forwarded=f'for="{CLIENT}:4711";proto=https;host="shop.example:8443"')
    assert seen(env) == (CLIENT, "https", "shop.example:8443", "shop.example", "8443")
    chain = 'for=1.2.3.4;proto=http, For="[2001:db8:cafe::17]:4711";PROTO=https, for=10.1.1.1'
    assert seen(applied(Forwarded=chain))[:2] == ("2001:db8:cafe::17", "https")
    assert applied(Forwarded='for="_hidden:_port";proto=https')["REMOTE_ADDR"] == "_hidden"
    assert applied(Forwarded="for=unknown")["REMOTE_ADDR"] == "unknown"
    assert applied(Forwarded='for="\\_x\\"y"')["REMOTE_ADDR"] == "unknown"  # escapes undone


def test_x_forwarded_wins_over_forwarded_and_the_other_family_is_removed():
    """The balancer sets X-Forwarded-*; a client's own Forwarded passed on is not mixed in."""
    env = applied(X_Forwarded_For=CLIENT, Forwarded="for=1.2.3.4;proto=https;host=evil.example")
    assert seen(env)[:3] == (CLIENT, "http", "app.internal:8000")
    assert forwarded(env) == {"HTTP_X_FORWARDED_FOR"}
    env = applied(Forwarded=f"for={CLIENT}", X_Real_IP="1.2.3.4", X_Forwarded_Ssl="on")
    assert forwarded(env) == {"HTTP_FORWARDED"} and env["REMOTE_ADDR"] == CLIENT


def test_from_a_trusted_proxy_too_the_headers_not_read_here_are_removed():
    env = applied(X_Real_IP=CLIENT, X_Forwarded_Ssl="on", Front_End_Https="on")
    assert forwarded(env) == set() and seen(env)[:2] == (PROXY, "http")


def test_a_client_that_is_not_an_address_is_unknown_never_the_proxy():
    for garbage in ("garbage", "1.2.3.4.5", "<script>", "_x" * 100):
        assert applied(X_Forwarded_For=f"{CLIENT}, {garbage}")["REMOTE_ADDR"] == "unknown"
    assert applied(Forwarded='for="unterminated, for=10.1.1.1')["REMOTE_ADDR"] == "unknown"
    assert applied(Forwarded="proto=https")["REMOTE_ADDR"] == "unknown"  # no for=
    assert applied(Forwarded=f"for={CLIENT};for=1.2.3.4")["REMOTE_ADDR"] == "unknown"  # twice


def test_a_scheme_other_than_http_or_https_is_ignored():
    for proto in ("ftp", "https;", "javascript", "", "h" * 5000):
        assert applied(X_Forwarded_For=CLIENT, X_Forwarded_Proto=proto)["wsgi.url_scheme"] == "http"
    assert applied(Forwarded=f"for={CLIENT};proto=wss")["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize("host", ["evil.example/path", "user@evil.example", "evil.example\\x",
                                  "evil example", "a" * 300, "shop.example:99999",
                                  "shop.example:0", "[nonsense]", "shop.example:80:80",
                                  "évil.example", "evil.example\r\nX-Injected: 1"])  # fmt: skip
def test_a_host_that_is_not_host_and_port_is_ignored(host):
    env = applied(X_Forwarded_For=CLIENT, X_Forwarded_Host=host)
    assert seen(env)[2:] == ("app.internal:8000", "app.internal", "8000")
    quoted = host.replace("\\", "\\\\").replace('"', '\\"')  # as a quoted-string
    assert seen(applied(Forwarded=f'for={CLIENT};host="{quoted}"'))[2] == "app.internal:8000"


def test_a_thousand_hops_cost_bounded_work_and_make_the_client_unknown_or_the_right_one():
    hops = ", ".join(["10.0.0.7"] * 1000)
    start = time.perf_counter()
    for _ in range(100):
        env = applied(X_Forwarded_For=hops, X_Forwarded_Proto=", ".join(["https"] * 1000))
    assert time.perf_counter() - start < 1  # ~16 hops parsed each time, not 1,000
    assert seen(env)[:2] == ("unknown", "http")  # every hop read was ours: cannot tell
    assert applied(X_Forwarded_For=f"{hops}, {CLIENT}")["REMOTE_ADDR"] == CLIENT
    elements = ", ".join([f"for={CLIENT};proto=https"] * 1000)
    assert applied(Forwarded=elements * 8)["REMOTE_ADDR"] == CLIENT
    assert applied(X_Forwarded_For="," * 100_000)["REMOTE_ADDR"] == "unknown"


# -- from anybody else ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "forwarding, remote",
    [(Forwarding(), CLIENT), (Forwarding(), PROXY), (TRUSTED, STRANGER), (TRUSTED, "10.0.0.2x")],
)
def test_an_untrusted_peer_s_forwarding_headers_are_removed(forwarding, remote):
    env = applied(forwarding, remote, **SPOOFS)
    assert forwarded(env) == set()
    assert seen(env) == (remote, "http", "app.internal:8000", "127.0.0.1", "8000")
    assert env[PEER_KEY] == remote and env["REMOTE_PORT"] == "40123"


def test_applying_twice_changes_nothing_more():
    env = applied(X_Forwarded_For=CLIENT, X_Forwarded_Proto="https")
    TRUSTED.apply(env)  # the client is not a proxy: a second pass would have removed them
    assert env["HTTP_X_FORWARDED_FOR"] == CLIENT and env[PEER_KEY] == PROXY


def test_trusts_tells_whether_the_peer_s_headers_may_be_believed():
    assert Forwarding().trusts(environ(CLIENT))  # no balancer: the app faces its clients
    assert TRUSTED.trusts(environ(PROXY)) and not TRUSTED.trusts(environ(STRANGER))
    assert TRUSTED.trusts(applied(X_Forwarded_For=STRANGER))  # the peer, not the client
    assert not TRUSTED.trusts(environ("nonsense"))


def test_the_setting_names_itself_when_wrong():
    assert Forwarding("10.0.0.1").trusts(environ("10.0.0.1"))
    with pytest.raises(ConfigError, match="trusted_proxies: 'haproxy' is not an address"):
        Forwarding(["haproxy"])


# -- hop-by-hop headers ----------------------------------------------------------------------
def test_hop_by_hop_headers_and_those_connection_names_are_removed():
    env = environ(Connection="keep-alive, X-Secret, Upgrade", Keep_Alive="timeout=5",
                  Proxy_Authorization="Basic c2VjcmV0", TE="trailers", Trailer="X-Sum",
                  Transfer_Encoding="chunked", Upgrade="websocket", X_Secret="s",
                  Proxy_Connection="keep-alive", Accept="*/*")  # fmt: skip
    strip_hop_by_hop(env)
    assert [key for key in env if key.startswith("HTTP_")] == ["HTTP_HOST", "HTTP_ACCEPT"]


def test_connection_cannot_remove_the_host_the_framing_or_what_the_balancer_added():
    env = environ(Connection="Host, Content-Length, Content-Type, X-Forwarded-For, "
                  "X-Request-ID, Forwarded, traceparent, Cookie",
                  X_Forwarded_For=CLIENT, X_Request_ID="abc", Forwarded="for=1.2.3.4",
                  Traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01", Cookie="a=b")  # fmt: skip
    env.update(CONTENT_LENGTH="3", CONTENT_TYPE="text/plain")
    strip_hop_by_hop(env)
    kept = {"HTTP_HOST", "CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_X_FORWARDED_FOR",
            "HTTP_X_REQUEST_ID", "HTTP_FORWARDED", "HTTP_TRACEPARENT"}  # fmt: skip
    assert kept <= set(env) and "HTTP_COOKIE" not in env and "HTTP_CONNECTION" not in env


def test_a_hostile_connection_list_costs_bounded_work():
    env = environ(Connection=", ".join(f"X-H{i}" for i in range(5000)) + ", Bad Name, /",
                  X_H1="1", X_H4999="kept")  # fmt: skip
    strip_hop_by_hop(env)
    assert "HTTP_X_H1" not in env and env["HTTP_X_H4999"] == "kept"  # only the first names read


def test_with_no_trusted_proxies_apply_and_strip_cost_about_a_microsecond():
    base, forwarding = environ(CLIENT, Connection="keep-alive", Accept="*/*"), Forwarding()
    rounds = 20_000
    start = time.perf_counter()
    for _ in range(rounds):
        env = base.copy()
        forwarding.apply(env)
        strip_hop_by_hop(env)
    assert (time.perf_counter() - start) / rounds < 50e-6  # ~1 µs measured; generous bound
