"""How session data becomes the signed bytes a store keeps, and back.

A payload is ``format byte + HMAC-SHA256 (32 bytes) + body``. The signature covers the
format, the session id and the body, so a payload altered in the store, or copied from
another session, is rejected instead of loaded. The body is JSON by default, with
:mod:`scalekit.core.tagged_json` carrying the types JSON lacks. Pickle is used only when the
application opts in, and is then only ever read after the signature checks.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

from scalekit.core import tagged_json
from scalekit.core.errors import ConfigError, CorruptData, SerializationError
from scalekit.core.signing import SIGNATURE_SIZE, Signer


class JSONSerializer:
    """Deterministic JSON (sorted keys) with tagged extra types: the safe default."""

    format = b"J"

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

    format = b"P"

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
    """Encode a session's creation time and data into signed bytes, and back."""

    def __init__(self, secret: str | bytes | Sequence[str | bytes], serializer: str = "json"):
        if serializer not in SERIALIZERS:
            raise ConfigError(f"serializer {serializer!r} must be one of {', '.join(SERIALIZERS)}")
        self.serializer = SERIALIZERS[serializer]()
        self._signer = Signer(secret, "session payload")

    def body(self, created: float, data: dict[str, Any]) -> bytes:
        """The serialized, unsigned body; equal bodies mean equal sessions."""
        return self.serializer.dumps(created, data)

    def seal(self, sid: str, body: bytes) -> bytes:
        """Sign ``body`` for session ``sid``: the bytes a store keeps."""
        header = self.serializer.format
        return header + self._signer.sign(header + sid.encode() + b"\0" + body) + body

    def open(self, sid: str, payload: bytes) -> tuple[bytes, float, dict[str, Any]]:
        """Verify and decode a stored payload: ``(body, created, data)``.

        Raises :class:`CorruptData` if the signature is wrong (altered, another session's,
        another secret) or if the body was written with a serializer this app does not use.
        """
        header, signature = payload[:1], payload[1 : 1 + SIGNATURE_SIZE]
        body = payload[1 + SIGNATURE_SIZE :]
        if header != self.serializer.format:
            raise CorruptData(
                f"session {sid[:6]}...: stored with serializer {header!r}, "
                f"this app reads {self.serializer.format!r}; ignored"
            )
        if not self._signer.verify(header + sid.encode() + b"\0" + body, signature):
            raise CorruptData(f"session {sid[:6]}...: bad signature (altered or foreign data)")
        try:
            return (body, *self.serializer.loads(body))
        except Exception as exc:  # noqa: BLE001 - whatever a stored body makes the decoder raise
            raise CorruptData(f"session {sid[:6]}...: undecodable body ({exc})") from None

    def key_bodies(self, data: dict[str, Any]) -> dict[str, bytes]:
        """Each key's serialized value, to tell which keys a request changed."""
        return {key: self.serializer.dumps(0, {key: value}) for key, value in data.items()}
