"""The client's real address behind proxies the app trusts.

The client is ``REMOTE_ADDR``, unless that is a trusted proxy: then ``X-Forwarded-For`` is
read from the right, skipping trusted proxies, and the first address that is not one is the
client (anything left of it could be made up by the client). A spoofed ``X-Forwarded-For``
from a peer that is not a trusted proxy is ignored. Parse the setting once with
:func:`networks`, then call :func:`client_address` per request.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from scalekit.core.errors import ConfigError

__all__ = [
    "CUT",
    "MAX_HOPS",
    "Address",
    "Network",
    "client_address",
    "client_hop",
    "forwarded_hops",
    "networks",
    "parse_address",
    "within",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Hops read from the right of a forwarding header; more proxies than this in a row is not a
#: deploy, and the work per request stays bounded whatever a header holds.
MAX_HOPS = 16
#: The hop standing for the entries cut off on the left: not an address, so a walk that
#: reaches it gives an unknown client, never the left-most proxy read.
CUT = "unknown"


def networks(values: Iterable[str] | str, setting: str) -> tuple[Network, ...]:
    """Addresses and networks (``10.0.0.0/8``, ``192.168.1.7``, ``::1``) as networks;
    :class:`ConfigError` naming ``setting`` for one that is neither."""
    if isinstance(values, str):
        values = [values]
    parsed = []
    for value in values:
        try:
            parsed.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"{setting}: {value!r} is not an address or network; write e.g. 10.0.0.0/8, "
                "192.168.1.7 or ::1"
            ) from None
    return tuple(parsed)


@functools.lru_cache(maxsize=1024)
def parse_address(text: str) -> Address | None:
    """The address in ``text`` (a port, ``[v6]:port`` brackets and a zone dropped, an
    IPv4-mapped IPv6 address as IPv4), or None if there is none. Remembered: the balancers'
    and a client's addresses come again and again (``ipaddress`` takes over 1 µs each), and
    a flood of new ones only evicts."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def within(address: Address, trusted: tuple[Network, ...]) -> bool:
    """Whether ``address`` is in one of ``trusted`` (``in`` is False across IP versions)."""
    return any(address in net for net in trusted)


def forwarded_hops(value: str) -> list[str]:
    """The comma-separated entries of a forwarding header, stripped, empty ones dropped: at
    most the last :data:`MAX_HOPS`, with :data:`CUT` first when there were more."""
    entries = value.rsplit(",", MAX_HOPS)
    hops = [entry.strip() for entry in entries[-MAX_HOPS:] if entry and not entry.isspace()]
    if len(entries) > MAX_HOPS:
        hops.insert(0, CUT)
    return hops


def client_hop(hops: Sequence[str], trusted: tuple[Network, ...]) -> tuple[int, Address | None]:
    """The client's index in ``hops`` and its address: right to left, the first hop that is
    not a trusted proxy (a hop that is not an address is not one: its address is None); when
    every hop is, the left-most; ``(-1, None)`` when there are no hops (the peer itself is
    the client)."""
    address = None
    for index in range(len(hops) - 1, -1, -1):
        address = parse_address(hops[index])
        if address is None or not within(address, trusted):
            return index, address
    return (0, address) if hops else (-1, None)


def client_address(environ: dict, trusted_proxies: tuple[Network, ...] = ()) -> Address | None:
    """The client's address, ``X-Forwarded-For`` honoured only from ``trusted_proxies``
    (see the module docstring); None when it cannot be told (a malformed address)."""
    peer = parse_address(environ.get("REMOTE_ADDR", ""))
    if peer is None or not trusted_proxies or not within(peer, trusted_proxies):
        return peer
    hops = forwarded_hops(environ.get("HTTP_X_FORWARDED_FOR", ""))
    index, address = client_hop(hops, trusted_proxies)
    return peer if index < 0 else address
