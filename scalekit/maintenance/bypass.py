"""Who may use the site during maintenance: operators by address or by a secret.

The secret goes in a header; a request that shows it gets a bypass cookie holding a signed,
expiring token (the expiry and its HMAC under a key derived from the secret), never the
secret itself: a leaked cookie ends with its expiry and cannot be turned into the secret.

The client's address is ``REMOTE_ADDR``, unless that is a trusted proxy: then
``X-Forwarded-For`` is read from the right, skipping trusted proxies, and the first address
that is not one is the client (anything left of it could be made up by the client). A
spoofed ``X-Forwarded-For`` from a peer that is not a trusted proxy is ignored.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import time
from collections.abc import Callable, Iterable

from scalekit.core.errors import ConfigError
from scalekit.core.signing import MIN_SECRET_BYTES, Signer
from scalekit.wsgi.cookies import Cookie, cookie_value
from scalekit.wsgi.headers import make_private
from scalekit.wsgi.http import header_value

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
    """Lets through requests from ``allow`` networks, carrying ``secret`` in the ``header``
    (default ``X-Maintenance-Bypass``), or carrying the bypass ``cookie`` (default
    ``scalekit_maintenance``) that a request with the header was given, for
    ``cookie_seconds``."""

    def __init__(
        self,
        allow: Iterable[str] | str = (),
        trusted_proxies: Iterable[str] | str = (),
        secret: str | None = None,
        header: str = "X-Maintenance-Bypass",
        cookie: str = "scalekit_maintenance",
        cookie_seconds: int = 12 * 3600,
    ):
        self.allow = _networks(allow, "allow")
        self.trusted_proxies = _networks(trusted_proxies, "trusted_proxies")
        if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"the maintenance bypass secret must have at least {MIN_SECRET_BYTES} bytes (it "
                "signs the bypass cookie)"
            )
        self.secret = secret.encode() if secret else None
        self._signer = Signer(secret, "maintenance bypass cookie") if secret else None
        self.header_key = "HTTP_" + header_value(header, "bypass_header").upper().replace("-", "_")
        if cookie_seconds <= 0:
            raise ConfigError("the bypass cookie_seconds must be more than 0")
        self.cookie = Cookie(cookie, max_age=int(cookie_seconds))

    def __bool__(self) -> bool:
        return bool(self.allow or self.secret)

    def allows(self, environ: dict) -> bool:
        """True if this request may pass despite maintenance."""
        if self._shows_secret(environ):
            return True
        if self.secret is not None:
            cookie = cookie_value(environ.get("HTTP_COOKIE", ""), self.cookie.name)
            if cookie is not None and self._valid(cookie):
                return True
        if self.allow:
            address = client_address(environ, self.trusted_proxies)
            if address is not None and _within(address, self.allow):
                return True
        return False

    def token(self, now: float | None = None) -> str:
        """A bypass cookie value: its expiry (unix time) and the expiry's signature."""
        expiry = str(int(time.time() if now is None else now) + self.cookie.max_age)
        return f"{expiry}.{self._signature(expiry)}"

    def granting(self, environ: dict, start_response: Callable) -> Callable:
        """``start_response`` for a request that passes: one that showed the secret in the
        header also gets the bypass cookie (and the response is made private)."""
        if not self._shows_secret(environ):
            return start_response
        https = environ.get("wsgi.url_scheme") == "https"
        grant = self.cookie.set_header(self.token(), https=https)

        def granted(status: str, headers: list, exc_info=None):
            return start_response(status, make_private([*headers, grant]), exc_info)

        return granted

    def _shows_secret(self, environ: dict) -> bool:
        given = environ.get(self.header_key)
        if self.secret is None or given is None:
            return False
        return hmac.compare_digest(given.encode(), self.secret)

    def _valid(self, token: str) -> bool:
        expiry, _, signature = token.partition(".")
        if not (expiry.isascii() and expiry.isdigit() and len(expiry) <= 12):
            return False  # not a token: the secret itself (the former cookie) or garbage
        expected = self._signature(expiry)
        return hmac.compare_digest(signature.encode(), expected.encode()) and (
            int(expiry) > time.time()
        )

    def _signature(self, expiry: str) -> str:
        return base64.urlsafe_b64encode(self._signer.sign(expiry.encode())).decode().rstrip("=")
