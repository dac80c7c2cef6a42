"""HMAC-SHA256 signing with a list of secrets: the first signs, every one verifies.

Rotate a key by putting the new secret first and keeping the old one after it until
everything signed with it has expired. Each use ("session cookie", "session payload")
derives its own key, so a signature made for one use is worthless for another.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from scalekit.core.errors import ConfigError

SIGNATURE_SIZE = 32
MIN_SECRET_BYTES = 32  # as many as the key: a shorter secret is the easier thing to guess
_MAKE_ONE = 'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


def secret_list(secret: str | bytes | Sequence[str | bytes]) -> list[bytes]:
    """Normalize one secret or a list of them to a non-empty list of bytes, each at least
    ``MIN_SECRET_BYTES`` long (an old secret still verifies, so it must be as strong)."""
    secrets = [secret] if isinstance(secret, (str, bytes)) else list(secret or ())
    if not secrets or not all(isinstance(s, (str, bytes)) and s for s in secrets):
        raise ConfigError(
            "a secret is required: a non-empty string (or a list of them, newest first); "
            + _MAKE_ONE
        )
    keys = [s.encode() if isinstance(s, str) else s for s in secrets]
    for number, key in enumerate(keys, 1):
        if len(key) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"secret {number} of {len(keys)} is {len(key)} bytes: a secret must be at "
                f"least {MIN_SECRET_BYTES} bytes of random (a placeholder or a word is "
                f"guessable); {_MAKE_ONE}"
            )
    return keys


class Signer:
    """Sign and verify messages for one purpose with a rotating list of secrets."""

    def __init__(self, secret: str | bytes | Sequence[str | bytes], purpose: str):
        self._keys = [
            _PaddedKey(hmac.new(s, b"scalekit:" + purpose.encode(), hashlib.sha256).digest())
            for s in secret_list(secret)
        ]

    def sign(self, message: bytes) -> bytes:
        """The 32-byte signature of ``message`` with the newest secret."""
        return self._keys[0].mac(message)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True if any of the secrets signed ``message`` with ``signature``."""
        return any(hmac.compare_digest(key.mac(message), signature) for key in self._keys)


class _PaddedKey:
    """HMAC-SHA256 (RFC 2104) with the key's inner and outer pad states hashed once: each
    message then costs two state copies instead of a new HMAC context (half the time of
    ``hmac.digest`` on OpenSSL 3, the same bytes)."""

    def __init__(self, key: bytes):
        block = key.ljust(hashlib.sha256().block_size, b"\0")  # keys here are 32 bytes
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def mac(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()
