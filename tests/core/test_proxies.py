"""``scalekit.wsgi.proxies``: the client's address, X-Forwarded-For believed only from a
trusted proxy, read right to left past the trusted hops; spoofed headers are ignored."""

from __future__ import annotations

import ipaddress

import pytest

from scalekit.core.errors import ConfigError
from scalekit.wsgi.proxies import (
    CUT,
    MAX_HOPS,
    client_address,
    client_hop,
    forwarded_hops,
    networks,
)

TRUSTED = networks(["10.0.0.0/8", "192.168.1.7", "fd00::/8"], "trusted_proxies")
CLIENT, STRANGER = "203.0.113.9", "198.51.100.66"


def client(remote: str, forwarded: str | None = None, trusted=TRUSTED) -> str | None:
    environ = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    address = client_address(environ, trusted)
    return None if address is None else str(address)


def test_without_trusted_proxies_the_peer_is_the_client():
    assert client(CLIENT, STRANGER, trusted=()) == CLIENT
    assert client("10.1.1.1", CLIENT, trusted=()) == "10.1.1.1"


def test_a_trusted_proxy_s_forwarded_for_is_read_right_to_left_past_trusted_hops():
    assert client("10.0.0.2", CLIENT) == CLIENT
    assert client("10.0.0.2", f"{CLIENT}, 10.9.9.9, 192.168.1.7") == CLIENT  # three proxies
    assert client("fd00::1", CLIENT) == CLIENT
    assert client("::ffff:10.0.0.2", "[2001:db8::5]:4711, 10.0.0.3:80") == "2001:db8::5"
    assert client("10.0.0.2", "10.0.0.3, 10.0.0.4") == "10.0.0.3"  # all trusted: the left-most
    assert client("10.0.0.2", "") == "10.0.0.2"  # nothing forwarded: the proxy itself


def test_spoofed_headers_from_an_untrusted_peer_are_ignored():
    assert client(STRANGER, CLIENT) == STRANGER
    assert client(STRANGER, "10.0.0.2") == STRANGER  # claiming to be a trusted proxy
    assert client("192.168.1.8", CLIENT) == "192.168.1.8"  # next to a trusted address


def test_what_a_client_puts_left_of_the_real_proxy_entry_is_ignored():
    # the client sent "X-Forwarded-For: 1.2.3.4, 10.0.0.5"; our proxy appended its address
    assert client("10.0.0.2", f"1.2.3.4, 10.0.0.5, {STRANGER}") == STRANGER
    assert client("10.0.0.2", f"not-an-ip, {CLIENT}") == CLIENT


def test_a_malformed_address_is_none_never_a_guess():
    assert client("10.0.0.2", f"{CLIENT}, garbage") is None
    assert client("", CLIENT) is None and client("nonsense") is None


def test_the_setting_takes_addresses_and_networks_and_names_itself_when_wrong():
    assert networks("10.0.0.1", "x") == (ipaddress.ip_network("10.0.0.1/32"),)
    assert networks([" 10.0.0.0/8 ", "::1"], "x")[1] == ipaddress.ip_network("::1/128")
    with pytest.raises(ConfigError, match="trusted_proxies: 'haproxy' is not an address"):
        networks(["10.0.0.1", "haproxy"], "trusted_proxies")


def test_the_walk_reads_a_bounded_number_of_hops_and_never_guesses_past_them():
    ours = ", ".join(["10.0.0.7"] * 1000)
    assert client("10.0.0.2", f"{ours}, {CLIENT}") == CLIENT
    assert client("10.0.0.2", ours) is None  # every hop read is ours: who sent it is unknown
    assert client("10.0.0.2", ", ".join(["10.0.0.7"] * MAX_HOPS)) == "10.0.0.7"  # all read
    hops = forwarded_hops(" , ".join(str(n) for n in range(1000)))
    assert hops == [CUT, *(str(n) for n in range(1000 - MAX_HOPS, 1000))]
    assert forwarded_hops(" a,, b ,") == ["a", "b"] and forwarded_hops("") == []


def test_client_hop_gives_the_index_and_the_address_of_the_client():
    assert client_hop([CLIENT, "10.0.0.3"], TRUSTED) == (0, ipaddress.ip_address(CLIENT))
    assert client_hop(["10.0.0.4", "10.0.0.3"], TRUSTED) == (0, ipaddress.ip_address("10.0.0.4"))
    assert client_hop([CLIENT, "_hidden", "10.0.0.3"], TRUSTED) == (1, None)
    assert client_hop([], TRUSTED) == (-1, None)
