"""HMAC-SHA256 signing: the bytes the standard library computes, and key rotation."""

import hashlib
import hmac

import pytest

from scalekit.core.errors import ConfigError
from scalekit.core.signing import Signer

ONE, OLD, NEW = (
    "secret one, 32 bytes or longer...",
    "old secret, 32 bytes or longer...",
    ("new secret, 32 bytes or longer..."),
)


def stdlib_signature(secret: bytes, purpose: str, message: bytes) -> bytes:
    key = hmac.new(secret, b"scalekit:" + purpose.encode(), hashlib.sha256).digest()
    return hmac.digest(key, message, "sha256")


@pytest.mark.parametrize("message", [b"", b"x", b"session id\0" + bytes(range(256)) * 40])
def test_signature_is_hmac_sha256_of_the_purpose_key(message):
    signer = Signer(ONE, "session payload")
    assert signer.sign(message) == stdlib_signature(ONE.encode(), "session payload", message)


def test_the_first_secret_signs_and_every_secret_verifies():
    old, new = Signer(OLD, "cookie"), Signer([NEW, OLD], "cookie")
    assert new.sign(b"m") == Signer(NEW, "cookie").sign(b"m")
    assert new.verify(b"m", old.sign(b"m"))
    assert not Signer(NEW, "cookie").verify(b"m", old.sign(b"m"))


def test_a_signature_is_bound_to_its_message_and_purpose():
    signer = Signer(ONE, "cookie")
    signature = signer.sign(b"m")
    assert not signer.verify(b"n", signature)
    assert not Signer(ONE, "payload").verify(b"m", signature)
    assert not signer.verify(b"m", signature[:-1])


@pytest.mark.parametrize("secret", ["", [], [""], None, [1]])
def test_a_missing_secret_is_a_config_error(secret):
    with pytest.raises(ConfigError, match="a secret is required"):
        Signer(secret, "cookie")


@pytest.mark.parametrize(
    "secret", ["new-secret", "x" * 31, "é" * 15, [NEW, "previous-secret"], ["tiny", OLD]]
)
def test_a_secret_under_32_bytes_is_a_config_error_naming_the_fix(secret):
    with pytest.raises(ConfigError, match="at least 32 bytes") as caught:
        Signer(secret, "cookie")
    message = str(caught.value)
    assert "secrets.token_urlsafe(32)" in message
    given = secret if isinstance(secret, list) else [secret]
    assert not any(weak in message for weak in given if len(weak) < 32)  # never shown


def test_a_32_byte_secret_is_accepted():
    assert Signer("é" * 16, "cookie").verify(b"m", Signer("é" * 16, "cookie").sign(b"m"))
