"""JSON that round-trips the types sessions and caches commonly hold.

datetime, date, time, Decimal, bytes, set, tuple and UUID become one-key objects whose key
starts with a space (``{" date": "2026-11-21"}``); a user dict that looks like a tag is
wrapped so it reads back as itself. Output is deterministic (sorted keys, sets sorted),
so equal values give equal bytes.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import uuid
from typing import Any

ALLOWED = (
    "str, int, float, bool, None, list, dict with str keys, datetime, date, time, Decimal, "
    "bytes, set, tuple, UUID"
)


#: The JSON types that are immutable: stored as they are.
SCALARS = frozenset((str, int, float, bool, type(None)))


class NotJSON(Exception):
    """Raised inside the walk; ``path`` grows as it unwinds, so only errors pay for it."""

    def __init__(self, problem: str, path: str = ""):
        self.problem, self.path = problem, path

    def under(self, step: str) -> NotJSON:
        self.path = step + self.path
        return self


def _to_tagged(value: Any) -> Any:
    """Turn ``value`` into plain JSON types, tagging what JSON cannot hold."""
    kind = type(value)
    if kind in SCALARS:
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
    raise NotJSON(f"holds a {type(value).__name__}, which JSON sessions cannot store")


def _dict_to_tagged(value: dict) -> dict:
    plain = {}
    for key, item in value.items():
        if type(key) is not str:
            raise NotJSON(f"has a non-string dict key {key!r}; JSON sessions need string keys")
        try:
            plain[key] = item if type(item) in SCALARS else _to_tagged(item)
        except NotJSON as exc:
            raise exc.under(f".{key}") from None
    if len(plain) == 1 and next(iter(plain)).startswith(" "):
        return {" dict": list(plain.items())}  # a user dict that looks like a tag
    return plain


def _items_to_tagged(items) -> list:
    tagged = []
    for index, item in enumerate(items):
        try:
            tagged.append(item if type(item) in SCALARS else _to_tagged(item))
        except NotJSON as exc:
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


def from_tagged(obj: dict) -> Any:
    if len(obj) == 1:
        tag, value = next(iter(obj.items()))
        untag = _UNTAG.get(tag)
        if untag is not None:
            return untag(value)
    return obj


def to_tagged(value: Any) -> Any:
    """``value`` as plain JSON types; raises :class:`NotJSON` naming the bad item's path."""
    return value if type(value) in SCALARS else _to_tagged(value)


#: Compact, sorted, deterministic: equal values give equal bytes.
ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_PLAIN = json.JSONDecoder()
_TAGGED = json.JSONDecoder(object_hook=from_tagged)


def dumps(value: Any) -> bytes:
    """Deterministic UTF-8 JSON for ``value`` (see :func:`to_tagged` for errors)."""
    return ENCODER.encode(to_tagged(value)).encode("utf-8")


def loads(body: bytes | str) -> Any:
    """Decode what :func:`dumps` wrote (tags become their types again).

    Raises ``ValueError`` (``UnicodeDecodeError``, ``json.JSONDecodeError``) on bad input.
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    # A tag is an object whose key starts with a space; without one, skip the slower hook.
    return _TAGGED.decode(text) if '{" ' in text else _PLAIN.decode(text)
