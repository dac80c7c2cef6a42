"""Signed, expiring download links: ``?expires=<epoch seconds>&signature=<HMAC>``.

A link signs the upload's name and its expiry with the app's secret (purpose
``scalekit.uploads``: a signature made for sessions or anything else is worthless here), so
whoever holds the link may download that one upload until it expires, without the
authorization a logged-in user would need. Rotating the secret (the new one first) keeps
the links signed with the old one valid while it stays in the list.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Sequence
from urllib.parse import parse_qs, urlencode

from scalekit.core.errors import ConfigError
from scalekit.core.signing import Signer

__all__ = ["PURPOSE", "SignedLinks", "link_parameters"]

PURPOSE = "scalekit.uploads"
_EXPIRES, _SIGNATURE = "expires", "signature"
_MAX_EXPIRES_DIGITS = 12  # epoch seconds until the year 33658
_SIGNATURE_CHARS = 43  # 32 bytes, URL-safe base 64 without padding


def link_parameters(query_string: str) -> dict[str, str] | None:
    """The ``expires`` and ``signature`` a request's query carries (the first of each),
    ``None`` when it carries neither: the request is not for a signed link."""
    query = parse_qs(query_string or "", keep_blank_values=True)
    if _EXPIRES not in query and _SIGNATURE not in query:
        return None
    return {key: query[key][0] if key in query else "" for key in (_EXPIRES, _SIGNATURE)}


class SignedLinks:
    """Make and check the query of a signed, expiring link to one upload."""

    def __init__(self, secret: str | bytes | Sequence[str | bytes]):
        self._signer = Signer(secret, PURPOSE)

    def query(self, name: str, expires_in: float) -> str:
        """The query string (no ``?``) of a link to ``name`` valid for ``expires_in`` seconds."""
        if not expires_in > 0:
            raise ConfigError(
                f"expires_in must be a positive number of seconds, not {expires_in!r}"
            )
        expires = math.ceil(time.time() + expires_in)
        signature = self._signer.sign(_message(name, expires))
        encoded = base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")
        return urlencode({_EXPIRES: expires, _SIGNATURE: encoded})

    def valid(self, name: str, parameters: dict[str, str]) -> bool:
        """True if ``parameters`` (from :func:`link_parameters`) sign ``name`` with one of the
        secrets and have not expired; False for a forged, altered, malformed or old link."""
        expires, signature = parameters.get(_EXPIRES, ""), parameters.get(_SIGNATURE, "")
        if not (expires.isascii() and expires.isdigit() and len(expires) <= _MAX_EXPIRES_DIGITS):
            return False
        if len(signature) != _SIGNATURE_CHARS or int(expires) < time.time():
            return False
        try:
            raw = base64.urlsafe_b64decode(signature + "=")
        except (binascii.Error, ValueError):
            return False
        return self._signer.verify(_message(name, int(expires)), raw)


def _message(name: str, expires: int) -> bytes:
    return f"{expires}:{name}".encode()
