"""Who may use the site during maintenance: operators by address or by a secret.

The client's address is ``REMOTE_ADDR``, unless that is a trusted proxy: then
``X-Forwarded-For`` is read from the right, skipping trusted proxies, and the first address
that is not one is the client (anything left of it could be made up by the client). A
spoofed ``X-Forwarded-For`` from a peer that is not a trusted proxy is ignored.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable

from scalekit.core.errors import ConfigError
from scalekit.wsgi.cookies import cookie_value

__all__ = ["Bypass", "client_address"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _networks(values: Iterable[str] | str, setting: str) -> tuple[_Network, ...]:
    if isinstance(values, str):
        values = [values]
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"{setting}: {value!r} is not an address or network; write e.g. 10.0.0.0/8, "
                "192.168.1.7 or ::1"
            ) from None
    return tuple(networks)


def _address(text: str) -> _Address | None:
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


def _within(address: _Address, networks: tuple[_Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(environ: dict, trusted_proxies: tuple[_Network, ...] = ()) -> _Address | None:
    """The client's address, ``X-Forwarded-For`` honoured only from ``trusted_proxies``;
    ``None`` when it cannot be told (a malformed address)."""
    peer = _address(environ.get("REMOTE_ADDR", ""))
    if peer is None or not trusted_proxies or not _within(peer, trusted_proxies):
        return peer
    forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None or not _within(address, trusted_proxies):
            return address
        peer = address
    return peer  # every hop is a trusted proxy: the left-most one


class Bypass:
    """Lets through requests from ``allow`` networks or carrying ``secret`` in the
    ``header`` (default ``X-Maintenance-Bypass``) or the ``cookie`` (default
    ``scalekit_maintenance``)."""

    def __init__(
        self,
        allow: Iterable[str] | str = (),
        trusted_proxies: Iterable[str] | str = (),
        secret: str | None = None,
        header: str = "X-Maintenance-Bypass",
        cookie: str = "scalekit_maintenance",
    ):
        self.allow = _networks(allow, "allow")
        self.trusted_proxies = _networks(trusted_proxies, "trusted_proxies")
        if secret is not None and len(secret) < 16:
            raise ConfigError("the maintenance bypass secret must have at least 16 characters")
        self.secret = secret.encode() if secret else None
        self.header_key = "HTTP_" + header.upper().replace("-", "_")
        self.cookie = cookie

    def __bool__(self) -> bool:
        return bool(self.allow or self.secret)

    def allows(self, environ: dict) -> bool:
        """True if this request may pass despite maintenance."""
        if self.secret is not None:
            given = environ.get(self.header_key)
            if given is not None and hmac.compare_digest(given.encode(), self.secret):
                return True
            cookie = cookie_value(environ.get("HTTP_COOKIE", ""), self.cookie)
            if cookie is not None and hmac.compare_digest(cookie.encode(), self.secret):
                return True
        if self.allow:
            address = client_address(environ, self.trusted_proxies)
            if address is not None and _within(address, self.allow):
                return True
        return False
