"""JSON that round-trips the types sessions and caches commonly hold.

datetime, date, time, Decimal, bytes, set, tuple and UUID become one-key objects whose key
starts with a space (``{" date": "2026-11-21"}``); a user dict that looks like a tag is
wrapped so it reads back as itself. Output is deterministic (sorted keys, sets sorted),
so equal values give equal bytes.

A caller may add more with an :class:`Extension`, passed to :func:`dumps` and :func:`loads`:
dicts with keys other than str (``{1: "a"}`` reads back with the int key, as pickle keeps it)
and types of its own, named by their class's dotted name so that their module is imported
only by whoever stores or reads one. Other callers never see them.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import uuid
from collections.abc import Callable
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


def _to_tagged(value: Any, ext: Extension | None) -> Any:
    """Turn ``value`` into plain JSON types, tagging what JSON cannot hold."""
    kind = type(value)
    if kind in SCALARS:
        return value
    if kind is dict or isinstance(value, dict):
        return _dict_to_tagged(value, ext)
    if kind is list or isinstance(value, list):
        return _items_to_tagged(value, ext)
    if isinstance(value, tuple):
        return {" tuple": _items_to_tagged(value, ext)}
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
        return {" set": _sorted(_items_to_tagged(value, ext))}
    if isinstance(value, uuid.UUID):
        return {" uuid": str(value)}
    if ext is not None:
        tagged = ext.tag(value)
        if tagged is not None:
            return tagged
    raise NotJSON(f"holds a {type(value).__name__}, which JSON cannot store")


def _dict_to_tagged(value: dict, ext: Extension | None) -> dict:
    plain = {}
    for key, item in value.items():
        if type(key) is not str:
            if ext is not None and ext.any_keys:
                return _pairs_to_tagged(value, ext)
            raise NotJSON(f"has a non-string dict key {key!r}; JSON needs string keys")
        try:
            plain[key] = item if type(item) in SCALARS else _to_tagged(item, ext)
        except NotJSON as exc:
            raise exc.under(f".{key}") from None
    if len(plain) == 1 and next(iter(plain)).startswith(" "):
        return {" dict": list(plain.items())}  # a user dict that looks like a tag
    return plain


def _items_to_tagged(items, ext: Extension | None) -> list:
    tagged = []
    for index, item in enumerate(items):
        try:
            tagged.append(item if type(item) in SCALARS else _to_tagged(item, ext))
        except NotJSON as exc:
            raise exc.under(f"[{index}]") from None
    return tagged


def _pairs_to_tagged(value: dict, ext: Extension) -> dict:
    """A dict with keys other than str: its ``[key, value]`` pairs, the keys tagged too."""
    pairs = []
    for key, item in value.items():
        try:
            pairs.append([to_tagged(key, ext), to_tagged(item, ext)])
        except NotJSON as exc:
            raise exc.under(f"[{key!r}]") from None
    return {" items": _sorted(pairs)}


def _sorted(items: list) -> list:
    """``items`` in a deterministic order (of their JSON), for sets and non-string keys."""
    items.sort(key=lambda item: json.dumps(item, sort_keys=True))
    return items


def _hashable(key: Any) -> Any:
    """A decoded dict key as it was stored: a set in it was a frozenset."""
    if isinstance(key, set):
        return frozenset(key)
    if isinstance(key, tuple):
        return tuple(map(_hashable, key))
    return key


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


def _untagger(untag: dict[str, Callable[[Any], Any]]) -> Callable[[dict], Any]:
    """The decoder's object hook: a one-key object whose key is in ``untag`` becomes its type."""

    def from_tagged(obj: dict) -> Any:
        if len(obj) == 1:
            tag, value = next(iter(obj.items()))
            found = untag.get(tag)
            if found is not None:
                return found(value)
        return obj

    return from_tagged


from_tagged = _untagger(_UNTAG)


class Extension:
    """What one caller adds to tagged JSON: ``any_keys`` lets dicts have keys other than str
    (int, float, bool, None, tuple, date, Decimal...), and :meth:`register` adds types."""

    def __init__(self, any_keys: bool = False):
        self.any_keys = any_keys
        #: The types it stores, for error messages.
        self.allowed = ALLOWED.replace("dict with str keys", "dict") if any_keys else ALLOWED
        self._to_plain: dict[str, tuple[str, Callable[[Any], Any]]] = {}
        self._untag = dict(_UNTAG)
        if any_keys:
            self._untag[" items"] = lambda pairs: {_hashable(key): item for key, item in pairs}
        self.decoder = json.JSONDecoder(object_hook=_untagger(self._untag))

    def register(
        self,
        class_name: str,
        tag: str,
        to_plain: Callable[[Any], Any],
        from_plain: Callable[[Any], Any],
        described: str,
    ) -> None:
        """Store instances of the class ``class_name`` ("module.Class", its subclasses too)
        as ``{tag: to_plain(value)}``, read back as ``from_plain(decoded)``; ``tag`` starts
        with a space; ``described`` names the type in error messages."""
        if not tag.startswith(" ") or tag in self._untag:
            raise ValueError(f"tag {tag!r} must start with a space and be new")
        self._to_plain[class_name] = (tag, to_plain)
        self._untag[tag] = from_plain
        self.allowed += f", {described}"

    def tag(self, value: Any) -> dict | None:
        """``value`` tagged if its class (or a base) is registered, else ``None``."""
        for kind in type(value).__mro__:
            found = self._to_plain.get(f"{kind.__module__}.{kind.__qualname__}")
            if found is not None:
                tag, to_plain = found
                return {tag: to_tagged(to_plain(value), self)}
        return None


def to_tagged(value: Any, ext: Extension | None = None) -> Any:
    """``value`` as plain JSON types; raises :class:`NotJSON` naming the bad item's path."""
    return value if type(value) in SCALARS else _to_tagged(value, ext)


#: Compact, sorted, deterministic: equal values give equal bytes.
ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_PLAIN = json.JSONDecoder()
_TAGGED = json.JSONDecoder(object_hook=from_tagged)


def dumps(value: Any, ext: Extension | None = None) -> bytes:
    """Deterministic UTF-8 JSON for ``value`` (see :func:`to_tagged` for errors)."""
    return ENCODER.encode(to_tagged(value, ext)).encode("utf-8")


def loads(body: bytes | str, ext: Extension | None = None) -> Any:
    """Decode what :func:`dumps` wrote with the same ``ext`` (tags become their types again).

    Raises ``ValueError`` (``UnicodeDecodeError``, ``json.JSONDecodeError``) on bad input,
    and whatever an extension's ``from_plain`` raises on data it cannot rebuild.
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    # A tag is an object whose key starts with a space; without one, skip the slower hook.
    if '{" ' not in text:
        return _PLAIN.decode(text)
    return (_TAGGED if ext is None else ext.decoder).decode(text)
