"""Who may use the site during maintenance: operators by address or by a secret.

The secret goes in a header; a request that shows it gets a bypass cookie holding a signed,
expiring token (the expiry and its HMAC under a key derived from the secret), never the
secret itself: a leaked cookie ends with its expiry and cannot be turned into the secret.

The client's address is :func:`scalekit.wsgi.proxies.client_address`: ``X-Forwarded-For``
is believed from ``trusted_proxies`` only.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Callable, Iterable

from scalekit.core.errors import ConfigError
from scalekit.core.signing import MIN_SECRET_BYTES, Signer
from scalekit.wsgi.cookies import Cookie, cookie_value
from scalekit.wsgi.headers import make_private
from scalekit.wsgi.http import header_value
from scalekit.wsgi.proxies import client_address, networks, within

__all__ = ["Bypass", "client_address"]


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
        self.allow = networks(allow, "allow")
        self.trusted_proxies = networks(trusted_proxies, "trusted_proxies")
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
            if address is not None and within(address, self.allow):
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
