"""The session cookie: a random id plus its HMAC, read strictly and written safely (the
cookie's attributes and headers are :class:`scalekit.wsgi.cookies.Cookie`'s)."""

from __future__ import annotations

import base64
import logging
import re
import secrets
from collections.abc import Sequence
from typing import Any

from scalekit.core.signing import Signer
from scalekit.wsgi.cookies import Cookie, parse_cookies

log = logging.getLogger("scalekit.sessions")

ID_BYTES = 18  # 144 random bits, 24 URL-safe characters
_VALUE = re.compile(r"([A-Za-z0-9_-]{24})\.([A-Za-z0-9_-]{43})\Z")
_MAX_VALUE = 200  # anything longer is not ours: ignored before any parsing
_VERIFIED_MAX = 4096  # cookie values remembered as verified, per process


def new_session_id() -> str:
    """A fresh random session id (never taken from the client)."""
    return secrets.token_urlsafe(ID_BYTES)


def _encode(signature: bytes) -> str:
    """The one spelling of ``signature`` in a cookie: URL-safe base64, unpadded."""
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")


class SessionCookie(Cookie):
    """Reads the session id from a request's cookies and writes Set-Cookie headers.

    Attributes (``path``, ``domain``, ``max_age``, ``secure``, ``httponly``, ``samesite``)
    as :class:`~scalekit.wsgi.cookies.Cookie` takes them.
    """

    def __init__(self, name: str, secret: str | bytes | Sequence[str | bytes], **attributes: Any):
        super().__init__(name, **attributes)
        self._signer = Signer(secret, "session cookie")
        # Values that verified, with their ids: a returning client costs no HMAC. Emptied
        # when full; under the GIL a racing reader only misses and verifies again.
        self._verified: dict[str, str] = {}

    def value(self, sid: str) -> str:
        """The cookie value for ``sid``: ``id.signature``."""
        return f"{sid}.{_encode(self._signer.sign(sid.encode()))}"

    def read(self, environ: dict) -> str | None:
        """The verified session id of this request, or ``None`` (no I/O either way)."""
        header = environ.get("HTTP_COOKIE", "")
        if self.name not in header:  # the common miss costs no parsing
            return None
        for name, value in parse_cookies(header):
            if name != self.name:
                continue
            sid = self._verified.get(value)
            if sid is None:
                sid = self._verify(value)
                if sid is None:
                    continue
                if len(self._verified) >= _VERIFIED_MAX:
                    self._verified.clear()
                self._verified[value] = sid
            return sid
        return None

    def _verify(self, value: str) -> str | None:
        if len(value) > _MAX_VALUE:
            log.debug("session cookie ignored: %d characters is oversized", len(value))
            return None
        match = _VALUE.match(value)
        if match is None:
            log.debug("session cookie ignored: malformed value %r", value[:40])
            return None
        sid, signature = match.groups()
        raw = base64.urlsafe_b64decode(signature + "=")  # the pattern admits only base64
        if _encode(raw) != signature:  # 43 characters carry 2 spare bits: 4 spellings
            log.debug("session cookie ignored: non-canonical signature for id %s...", sid[:6])
            return None
        if not self._signer.verify(sid.encode(), raw):
            log.debug("session cookie ignored: bad signature for id %s...", sid[:6])
            return None
        return sid

    def set_header(self, sid: str, *, https: bool, force_secure: bool = False) -> tuple[str, str]:
        """The Set-Cookie header that gives the client ``sid`` (signed)."""
        return super().set_header(self.value(sid), https=https, force_secure=force_secure)
