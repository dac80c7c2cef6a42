"""Admin pages (the ticket and task viewers): who may see them, how they are sent, their forms.

:class:`Guard` lets in a client whose address is in ``allowed`` (addresses or networks,
matched against ``REMOTE_ADDR`` only: behind a proxy on the same host every client looks
local, so use a token there) or that sends the ``token``, as ``Authorization: Bearer <token>``
or once as ``?token=<token>``: that answer sets a cookie (HttpOnly, SameSite=Strict, the
mount point's path, signed with a key derived from the token, valid ``max_age`` seconds),
so that links never carry the token. :meth:`Guard.form_token` signs the hidden field of a
form that changes something (a POST: a GET never does), :meth:`Guard.form_ok` checks it.
:func:`admin_page` is a whole HTML page with the headers an admin page needs: never cached,
never framed, no script, no referrer, forms only to itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import os
import time
from collections.abc import Iterable
from urllib.parse import parse_qs, quote

from scalekit.core.errors import ConfigError
from scalekit.wsgi import pages
from scalekit.wsgi.cookies import Cookie, cookie_value

__all__ = ["COOKIE_MAX_AGE", "STYLE", "Guard", "admin_page", "form_fields"]

COOKIE_MAX_AGE = 8 * 3600
#: The largest form body read, in bytes (an admin form holds a token and an id or two).
MAX_FORM = 4096
STYLE = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;"
    "padding:4px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}"
    "pre{background:#f7f7f7;padding:8px;overflow:auto}.hl{background:#ffe9a8}"
    "nav a{margin-right:1em}code{font-size:13px}h2{margin-top:1.5em}form{display:inline}"
)


def _policy(forms: bool) -> str:
    return (
        f"default-src 'none'; style-src 'unsafe-inline'; form-action {_FORMS[forms]}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


_FORMS = {False: "'none'", True: "'self'"}


def admin_page(
    status: str, title: str, body: str, *headers: tuple[str, str], forms: bool = False
) -> pages.Page:
    """The HTML page ``title`` around ``body`` (HTML, escaped by the caller), not cached nor
    framed; ``forms``: its forms may post to the same origin (else it may hold none)."""
    document = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    security = (
        pages.NO_STORE,
        ("Content-Security-Policy", _policy(forms)),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Content-Type-Options", "nosniff"),
    )
    return pages.page(status, pages.HTML, document.encode(), *security, *headers)


def form_fields(environ: dict) -> dict[str, str] | None:
    """The fields of a urlencoded POST body (the first value of each); None when the body is
    larger than :data:`MAX_FORM` or is not a urlencoded form."""
    kind = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if kind not in ("", "application/x-www-form-urlencoded") or not 0 <= length <= MAX_FORM:
        return None
    body = environ["wsgi.input"].read(length) if length else b""
    try:
        parsed = parse_qs(body.decode("ascii"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in parsed.items()}


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


class Guard:
    """Access to the admin app ``name`` (``"tickets"``: cookie ``scalekit_tickets``); see the
    module docstring. ``owner`` names the app in configuration errors. ``secret`` keys the
    cookies and form tokens; by default a key derived from the token, else (addresses only)
    a random key of this process: give one when several processes serve the same page."""

    def __init__(
        self,
        name: str,
        owner: str,
        *,
        allowed: Iterable[str] = (),
        token: str | None = None,
        secret: str | bytes | None = None,
        max_age: int = COOKIE_MAX_AGE,
    ):
        allowed = list(allowed)
        try:
            self.allowed = tuple(ipaddress.ip_network(item, strict=False) for item in allowed)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{owner} allowed={allowed!r}: {exc}") from None
        if not self.allowed and not token:
            raise ConfigError(f"{owner} needs allowed=[addresses] or a token=, or both")
        label = f"scalekit:{name} viewer".encode()
        if secret is None:  # the token's key (or this process's), the token not in the label
            base = token.encode() if token else os.urandom(32)
        else:  # the token in the label: a new token still ends the cookies of the old one
            base, label = _bytes(secret), label + b"\0" + (token or "").encode()
        self._key = hmac.digest(base, label, hashlib.sha256)
        self.cookie, self.token, self.max_age = f"scalekit_{name}", token, max_age

    def admit(self, environ: dict) -> list[tuple[str, str]] | None:
        """None if the client may not in; else the headers its answer adds (the cookie, when
        the token came in the query)."""
        given = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
        if not self._permitted(environ, given):
            return None
        if not self._is_token(given):
            return []
        root = environ.get("SCRIPT_NAME", "").rstrip("/")
        jar = Cookie(self.cookie, path=quote(root) or "/", samesite="Strict", max_age=self.max_age)
        https = environ.get("wsgi.url_scheme") == "https"
        return [jar.set_header(self._signed(time.time() + self.max_age), https=https)]

    def form_token(self) -> str:
        """The hidden field of a form: valid ``max_age`` seconds, for this guard's key only."""
        return self._signed(time.time() + self.max_age, b"form:")

    def form_ok(self, sent: str | None) -> bool:
        """Whether ``sent`` is a form token of this guard that has not expired."""
        return self._valid(sent or "", b"form:")

    def _signed(self, expires: float, purpose: bytes = b"") -> str:
        """The time ``expires`` and its MAC (a cookie's, or a form's with ``b"form:"``)."""
        stamp = str(int(expires))  # 10 digits until the year 2286
        mac = hmac.digest(self._key, purpose + stamp.encode(), hashlib.sha256)
        return f"{stamp}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def _valid(self, held: str, purpose: bytes = b"") -> bool:
        stamp = held.partition(".")[0]
        if not (stamp.isascii() and stamp.isdigit() and time.time() < int(stamp[:12])):
            return False
        return hmac.compare_digest(held.encode(), self._signed(int(stamp[:12]), purpose).encode())

    def _is_token(self, sent: str) -> bool:
        return bool(self.token and sent) and hmac.compare_digest(sent.encode(), self.token.encode())

    def _permitted(self, environ: dict, given: str) -> bool:
        if self.token:
            header = environ.get("HTTP_AUTHORIZATION", "")
            if self._is_token(header[7:] if header[:7].lower() == "bearer " else given):
                return True
            if self._valid(cookie_value(environ.get("HTTP_COOKIE", ""), self.cookie) or ""):
                return True
        try:
            address = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        return any(address in network for network in self.allowed)
