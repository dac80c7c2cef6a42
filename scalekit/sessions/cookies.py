"""The session cookie: a random id plus its HMAC, read strictly and written safely."""

from __future__ import annotations

import base64
import logging
import re
import secrets
from collections.abc import Sequence

from scalekit.core.errors import ConfigError
from scalekit.core.signing import Signer

log = logging.getLogger("scalekit.sessions")

ID_BYTES = 18  # 144 random bits, 24 URL-safe characters
_VALUE = re.compile(r"([A-Za-z0-9_-]{24})\.([A-Za-z0-9_-]{43})\Z")
_MAX_VALUE = 200  # anything longer is not ours: ignored before any parsing
_VERIFIED_MAX = 4096  # cookie values remembered as verified, per process
_SAMESITE = ("Lax", "Strict", "None")


def new_session_id() -> str:
    """A fresh random session id (never taken from the client)."""
    return secrets.token_urlsafe(ID_BYTES)


class SessionCookie:
    """Reads the session id from a request's cookies and writes Set-Cookie headers."""

    def __init__(
        self,
        name: str,
        secret: str | bytes | Sequence[str | bytes],
        *,
        path: str = "/",
        domain: str | None = None,
        max_age: int | None = None,
        secure: bool | str = "auto",
        httponly: bool = True,
        samesite: str | None = "Lax",
    ):
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name or ""):
            raise ConfigError(f"cookie name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
        if samesite is not None and samesite not in _SAMESITE:
            raise ConfigError(f"samesite={samesite!r} must be one of {_SAMESITE} or None")
        if secure not in (True, False, "auto"):
            raise ConfigError(f"secure={secure!r} must be True, False or 'auto'")
        for label, value in (("path", path), ("domain", domain or "")):
            if re.search(r"[;\s,\x00-\x1f]", value):
                raise ConfigError(f"cookie {label} {value!r} cannot hold ';', ',' or spaces")
        self.name, self.path, self.domain, self.max_age = name, path, domain, max_age
        self.secure, self.httponly, self.samesite = secure, httponly, samesite
        self._signer = Signer(secret, "session cookie")
        # Values that verified, with their ids: a returning client costs no HMAC. Emptied
        # when full; under the GIL a racing reader only misses and verifies again.
        self._verified: dict[str, str] = {}

    def value(self, sid: str) -> str:
        """The cookie value for ``sid``: ``id.signature``."""
        signature = base64.urlsafe_b64encode(self._signer.sign(sid.encode())).rstrip(b"=")
        return f"{sid}.{signature.decode('ascii')}"

    def read(self, environ: dict) -> str | None:
        """The verified session id of this request, or ``None`` (no I/O either way)."""
        header = environ.get("HTTP_COOKIE", "")
        if self.name not in header:
            return None
        for part in header.split(";"):
            name, eq, value = part.strip().partition("=")
            if name != self.name or not eq:
                continue
            value = value.strip().strip('"')
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
        try:
            raw = base64.urlsafe_b64decode(signature + "=")
        except ValueError:
            return None
        if not self._signer.verify(sid.encode(), raw):
            log.debug("session cookie ignored: bad signature for id %s...", sid[:6])
            return None
        return sid

    def set_header(self, sid: str, *, https: bool, force_secure: bool = False) -> tuple[str, str]:
        """The Set-Cookie header that gives the client ``sid``."""
        attributes = [f"{self.name}={self.value(sid)}", f"Path={self.path}"]
        if self.max_age is not None:
            attributes.append(f"Max-Age={int(self.max_age)}")
        return "Set-Cookie", self._finish(attributes, https, force_secure)

    def delete_header(self, *, https: bool) -> tuple[str, str]:
        """The Set-Cookie header that removes the cookie from the client."""
        attributes = [f"{self.name}=", f"Path={self.path}", "Max-Age=0",
                      "Expires=Thu, 01 Jan 1970 00:00:00 GMT"]  # fmt: skip
        return "Set-Cookie", self._finish(attributes, https, False)

    def _finish(self, attributes: list[str], https: bool, force_secure: bool) -> str:
        if self.domain:
            attributes.append(f"Domain={self.domain}")
        if self.secure is True or force_secure or (self.secure == "auto" and https):
            attributes.append("Secure")
        if self.httponly:
            attributes.append("HttpOnly")
        if self.samesite:
            attributes.append(f"SameSite={self.samesite}")
        return "; ".join(attributes)
