"""Cookies, one way for every piece: the request's ``Cookie`` header read leniently, and
``Set-Cookie`` headers built from attributes checked once, when the app starts.

Reading: items are split on ``;``, an item without ``=`` is not a cookie, a value loses its
surrounding spaces and quotes; what a value means (a signed id, a time) is the piece's to
check. Writing: HttpOnly and SameSite=Lax by default, Secure on HTTPS with ``secure="auto"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from scalekit.core.errors import ConfigError

__all__ = ["Cookie", "cookie_value", "parse_cookies"]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_UNSAFE = re.compile(r"[;\s,\x00-\x1f]")  # what would end or split an attribute
_SAMESITE = ("Lax", "Strict", "None")
_EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"


def parse_cookies(header: str) -> Iterator[tuple[str, str]]:
    """Each ``(name, value)`` of a ``Cookie`` header, in the order the client sent them."""
    for item in header.split(";"):
        name, eq, value = item.strip().partition("=")
        if eq:
            yield name, value.strip().strip('"')


def cookie_value(header: str, name: str) -> str | None:
    """The value of the first cookie called ``name`` in a ``Cookie`` header, or ``None``."""
    if name not in header:
        return None
    return next((value for key, value in parse_cookies(header) if key == name), None)


class Cookie:
    """One cookie's name and attributes (checked here: a :class:`ConfigError` names the fix),
    and the headers that set or remove it."""

    def __init__(
        self,
        name: str,
        *,
        path: str = "/",
        domain: str | None = None,
        max_age: int | None = None,
        secure: bool | str = "auto",
        httponly: bool = True,
        samesite: str | None = "Lax",
    ):
        if not _NAME.fullmatch(name or ""):
            raise ConfigError(f"cookie name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
        if samesite is not None and samesite not in _SAMESITE:
            raise ConfigError(f"samesite={samesite!r} must be one of {_SAMESITE} or None")
        if secure not in (True, False, "auto"):
            raise ConfigError(f"secure={secure!r} must be True, False or 'auto'")
        for label, value in (("path", path), ("domain", domain or "")):
            if _UNSAFE.search(value):
                raise ConfigError(f"cookie {label} {value!r} cannot hold ';', ',' or spaces")
        self.name, self.path, self.domain, self.max_age = name, path, domain, max_age
        self.secure, self.httponly, self.samesite = secure, httponly, samesite

    def set_header(self, value: str, *, https: bool, force_secure: bool = False) -> tuple[str, str]:
        """The ``Set-Cookie`` header that gives the client ``value``."""
        attributes = [f"{self.name}={value}", f"Path={self.path}"]
        if self.max_age is not None:
            attributes.append(f"Max-Age={int(self.max_age)}")
        return "Set-Cookie", self._finish(attributes, https, force_secure)

    def delete_header(self, *, https: bool) -> tuple[str, str]:
        """The ``Set-Cookie`` header that removes the cookie from the client."""
        attributes = [f"{self.name}=", f"Path={self.path}", "Max-Age=0", f"Expires={_EPOCH}"]
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
