"""How session data becomes the signed bytes a store keeps, and back.

A payload is ``format byte + HMAC-SHA256 (32 bytes) + signing time (8 bytes) + body``. The
signature covers the format, the session id, the signing time and the body, so a payload
altered in the store, or copied from another session, is rejected instead of loaded; and,
with an idle timeout, so is one signed more than 1.5 idle timeouts ago (an older payload
of the same session put back by whoever can write the store): a session in use is signed
again once its payload is half an idle timeout old, even when it did not change. Payloads
of the former format (``J``/``P``: no signing time) still load, and are signed again on
their first use. The body is JSON by default, with :mod:`scalekit.core.tagged_json`
carrying the types JSON lacks. Pickle is used only when the application opts in, and is
then only ever read after the signature checks.
"""

from __future__ import annotations

import pickle
import struct
import time
from collections.abc import Sequence
from typing import Any

from scalekit.core import tagged_json
from scalekit.core.errors import ConfigError, CorruptData, SerializationError
from scalekit.core.signing import SIGNATURE_SIZE, Signer

_SIGNED_AT = struct.Struct(">d")  # the signing time, Unix seconds


class JSONSerializer:
    """Deterministic JSON (sorted keys) with tagged extra types: the safe default."""

    format = b"j"  # b"J" before the signing time was signed

    def dumps(self, created: float, data: dict[str, Any]) -> bytes:
        try:
            tagged = tagged_json.to_tagged(data)
        except tagged_json.NotJSON as exc:
            raise SerializationError(
                f"session key {exc.path[1:]!r} {exc.problem}; use {tagged_json.ALLOWED}, "
                "or open the session layer with serializer='pickle'"
            ) from None
        return tagged_json.ENCODER.encode({"c": created, "d": tagged}).encode("utf-8")

    def loads(self, body: bytes) -> tuple[float, dict[str, Any]]:
        envelope = tagged_json.loads(body)
        return float(envelope["c"]), dict(envelope["d"])


class PickleSerializer:
    """Pickle, for apps that keep arbitrary objects in sessions (opt-in, always signed)."""

    format = b"p"  # b"P" before the signing time was signed

    def dumps(self, created: float, data: dict[str, Any]) -> bytes:
        try:
            return pickle.dumps((created, data), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - pickling fails in many ways, all told here
            raise SerializationError(f"session data cannot be pickled: {exc}") from None

    def loads(self, body: bytes) -> tuple[float, dict[str, Any]]:
        created, data = pickle.loads(body)  # only ever after the HMAC has verified
        return float(created), dict(data)


SERIALIZERS = {"json": JSONSerializer, "pickle": PickleSerializer}


class PayloadCodec:
    """Encode a session's creation time and data into signed bytes, and back.

    With ``idle_timeout`` (seconds), a payload signed more than 1.5 of it ago is refused,
    and :meth:`resign_due` says when to sign one again (half of it).
    """

    def __init__(
        self,
        secret: str | bytes | Sequence[str | bytes],
        serializer: str = "json",
        idle_timeout: float | None = None,
    ):
        if serializer not in SERIALIZERS:
            raise ConfigError(f"serializer {serializer!r} must be one of {', '.join(SERIALIZERS)}")
        self.serializer = SERIALIZERS[serializer]()
        self._former = self.serializer.format.upper()
        self._signer = Signer(secret, "session payload")
        self._resign_after = None if idle_timeout is None else idle_timeout / 2
        self._max_age = None if idle_timeout is None else idle_timeout * 1.5

    def body(self, created: float, data: dict[str, Any]) -> bytes:
        """The serialized, unsigned body; equal bodies mean equal sessions."""
        return self.serializer.dumps(created, data)

    def seal(self, sid: str, body: bytes) -> bytes:
        """Sign ``body`` for session ``sid``, now: the bytes a store keeps."""
        header, signed_at = self.serializer.format, _SIGNED_AT.pack(time.time())
        signature = self._signer.sign(header + sid.encode() + b"\0" + signed_at + body)
        return header + signature + signed_at + body

    def open(self, sid: str, payload: bytes) -> tuple[bytes, float, dict[str, Any]]:
        """Verify and decode a stored payload: ``(body, created, data)``.

        Raises :class:`CorruptData` if the signature is wrong (altered, another session's,
        another secret), if it was signed too long ago (an old payload put back), or if the
        body was written with a serializer this app does not use.
        """
        header, signature = payload[:1], payload[1 : 1 + SIGNATURE_SIZE]
        signed_at, body = b"", payload[1 + SIGNATURE_SIZE :]
        if header == self.serializer.format:
            signed_at, body = body[: _SIGNED_AT.size], body[_SIGNED_AT.size :]
        elif header != self._former:
            raise CorruptData(
                f"session {sid[:6]}...: stored with serializer {header!r}, "
                f"this app reads {self.serializer.format!r}; ignored"
            )
        if not self._signer.verify(header + sid.encode() + b"\0" + signed_at + body, signature):
            raise CorruptData(f"session {sid[:6]}...: bad signature (altered or foreign data)")
        age = None if self._max_age is None else self._age(payload)
        if age is not None and age > self._max_age:
            raise CorruptData(
                f"session {sid[:6]}...: payload signed {age:.0f}s ago, over 1.5 idle timeouts "
                "(an old payload put back in the store?)"
            )
        try:
            return (body, *self.serializer.loads(body))
        except Exception as exc:  # noqa: BLE001 - whatever a stored body makes the decoder raise
            raise CorruptData(f"session {sid[:6]}...: undecodable body ({exc})") from None

    def resign_due(self, payload: bytes) -> bool:
        """True if a verified ``payload`` should be signed again: half an idle timeout old,
        or of the former format (no signing time)."""
        if self._resign_after is None:
            return False
        age = self._age(payload)
        return age is None or age >= self._resign_after

    def _age(self, payload: bytes) -> float | None:
        """Seconds since ``payload`` was signed; ``None`` for the former format."""
        if payload[:1] != self.serializer.format:
            return None
        start = 1 + SIGNATURE_SIZE
        return time.time() - _SIGNED_AT.unpack_from(payload, start)[0]

    def key_bodies(self, data: dict[str, Any]) -> dict[str, bytes]:
        """Each key's serialized value, to tell which keys a request changed."""
        return {key: self.serializer.dumps(0, {key: value}) for key, value in data.items()}
