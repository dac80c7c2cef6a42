"""How session data becomes the signed bytes a store keeps, and back.

A payload is ``format byte + HMAC-SHA256 (32 bytes) + body``. The signature covers the
format, the session id and the body, so a payload altered in the store, or copied from
another session, is rejected instead of loaded. The body is JSON by default; values JSON
lacks (datetime, date, time, Decimal, bytes, set, tuple, UUID) round-trip as one-key
objects tagged with a key that starts with a space. Pickle is used only when the
application opts in, and is then only ever read after the signature checks.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import pickle
import uuid
from collections.abc import Sequence
from typing import Any

from scalekit.errors import ConfigError, CorruptData, SerializationError
from scalekit.signing import SIGNATURE_SIZE, Signer

_ALLOWED = (
    "str, int, float, bool, None, list, dict with str keys, datetime, date, time, Decimal, "
    "bytes, set, tuple, UUID"
)


_SCALARS = frozenset((str, int, float, bool, type(None)))


class _NotJSON(Exception):
    """Raised inside the walk; ``path`` grows as it unwinds, so only errors pay for it."""

    def __init__(self, problem: str, path: str = ""):
        self.problem, self.path = problem, path

    def under(self, step: str) -> _NotJSON:
        self.path = step + self.path
        return self


def _to_tagged(value: Any) -> Any:
    """Turn ``value`` into plain JSON types, tagging what JSON cannot hold."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict or isinstance(value, dict):
        return _dict_to_tagged(value)
    if kind is list or isinstance(value, list):
        return _items_to_tagged(value)
    if isinstance(value, tuple):
        return {" tuple": _items_to_tagged(value)}
    if isinstance(value, (str, int, float)):  # subclasses: str enums, IntEnum...
        return value
    if isinstance(value, datetime.datetime):
        return {" datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {" date": value.isoformat()}
    if isinstance(value, datetime.time):
        return {" time": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {" decimal": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {" bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (set, frozenset)):
        items = _items_to_tagged(value)
        items.sort(key=lambda item: json.dumps(item, sort_keys=True))
        return {" set": items}
    if isinstance(value, uuid.UUID):
        return {" uuid": str(value)}
    raise _NotJSON(f"holds a {type(value).__name__}, which JSON sessions cannot store")


def _dict_to_tagged(value: dict) -> dict:
    plain = {}
    for key, item in value.items():
        if type(key) is not str:
            raise _NotJSON(f"has a non-string dict key {key!r}; JSON sessions need string keys")
        try:
            plain[key] = item if type(item) in _SCALARS else _to_tagged(item)
        except _NotJSON as exc:
            raise exc.under(f".{key}") from None
    if len(plain) == 1 and next(iter(plain)).startswith(" "):
        return {" dict": list(plain.items())}  # a user dict that looks like a tag
    return plain


def _items_to_tagged(items) -> list:
    tagged = []
    for index, item in enumerate(items):
        try:
            tagged.append(item if type(item) in _SCALARS else _to_tagged(item))
        except _NotJSON as exc:
            raise exc.under(f"[{index}]") from None
    return tagged


_UNTAG = {
    " dict": dict,
    " tuple": tuple,
    " datetime": datetime.datetime.fromisoformat,
    " date": datetime.date.fromisoformat,
    " time": datetime.time.fromisoformat,
    " decimal": decimal.Decimal,
    " bytes": base64.b64decode,
    " set": set,
    " uuid": uuid.UUID,
}


def _from_tagged(obj: dict) -> Any:
    if len(obj) == 1:
        tag, value = next(iter(obj.items()))
        untag = _UNTAG.get(tag)
        if untag is not None:
            return untag(value)
    return obj


class JSONSerializer:
    """Deterministic JSON (sorted keys) with tagged extra types: the safe default."""

    format = b"J"

    def dumps(self, created: float, data: dict[str, Any]) -> bytes:
        try:
            tagged = _dict_to_tagged(data)
        except _NotJSON as exc:
            raise SerializationError(
                f"session key {exc.path[1:]!r} {exc.problem}; use {_ALLOWED}, "
                "or open the session layer with serializer='pickle'"
            ) from None
        return json.dumps(
            {"c": created, "d": tagged}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    def loads(self, body: bytes) -> tuple[float, dict[str, Any]]:
        # A tag is an object whose key starts with a space; without one, skip the hook.
        envelope = (
            json.loads(body, object_hook=_from_tagged) if b'{" ' in body else json.loads(body)
        )
        return float(envelope["c"]), dict(envelope["d"])


class PickleSerializer:
    """Pickle, for apps that keep arbitrary objects in sessions (opt-in, always signed)."""

    format = b"P"

    def dumps(self, created: float, data: dict[str, Any]) -> bytes:
        try:
            return pickle.dumps((created, data), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
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
        except Exception as exc:
            raise CorruptData(f"session {sid[:6]}...: undecodable body ({exc})") from None

    def key_bodies(self, data: dict[str, Any]) -> dict[str, bytes]:
        """Each key's serialized value, to tell which keys a request changed."""
        return {key: self.serializer.dumps(0, {key: value}) for key, value in data.items()}
