"""HMAC-SHA256 signing: the bytes the standard library computes, and key rotation."""

import hashlib
import hmac

import pytest

from scalekit.core.errors import ConfigError
from scalekit.core.signing import Signer


def stdlib_signature(secret: bytes, purpose: str, message: bytes) -> bytes:
    key = hmac.new(secret, b"scalekit:" + purpose.encode(), hashlib.sha256).digest()
    return hmac.digest(key, message, "sha256")


@pytest.mark.parametrize("message", [b"", b"x", b"session id\0" + bytes(range(256)) * 40])
def test_signature_is_hmac_sha256_of_the_purpose_key(message):
    signer = Signer("secret one", "session payload")
    assert signer.sign(message) == stdlib_signature(b"secret one", "session payload", message)


def test_the_first_secret_signs_and_every_secret_verifies():
    old, new = Signer("old", "cookie"), Signer(["new", "old"], "cookie")
    assert new.sign(b"m") == Signer("new", "cookie").sign(b"m")
    assert new.verify(b"m", old.sign(b"m"))
    assert not Signer("new", "cookie").verify(b"m", old.sign(b"m"))


def test_a_signature_is_bound_to_its_message_and_purpose():
    signer = Signer("secret", "cookie")
    signature = signer.sign(b"m")
    assert not signer.verify(b"n", signature)
    assert not Signer("secret", "payload").verify(b"m", signature)
    assert not signer.verify(b"m", signature[:-1])


@pytest.mark.parametrize("secret", ["", [], [""], None, [1]])
def test_a_missing_secret_is_a_config_error(secret):
    with pytest.raises(ConfigError, match="a secret is required"):
        Signer(secret, "cookie")
