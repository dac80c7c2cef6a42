"""How cache backends that serialize turn values into bytes and back (disk, memcache, Redis).

A value is a format letter and bytes: ``i`` an int as decimal ASCII (so Redis ``HINCRBY``
and memcached ``incr`` can count on it), ``j`` tagged JSON (:mod:`scalekit.core.tagged_json`:
datetime, Decimal, bytes, set... round-trip; the default), ``p`` a pickle, written and read
only by a backend opened with ``serializer="pickle"``.
"""

from __future__ import annotations

import pickle
from typing import Any

from scalekit.core import tagged_json
from scalekit.core.errors import ConfigError, SerializationError

SERIALIZERS = ("json", "pickle")


class Corrupt(Exception):
    """Stored bytes that cannot be read as a cache entry; the message says why."""


def check_serializer(serializer: Any, where: str) -> str:
    """``serializer`` if it is "json" or "pickle"; :class:`ConfigError` naming ``where``."""
    if serializer not in SERIALIZERS:
        raise ConfigError(f"{where}: cache serializer {serializer!r}: use 'json' or 'pickle'")
    return serializer


def dump(key: str, value: Any, serializer: str) -> tuple[str, bytes]:
    """The format letter and bytes of ``value``; :class:`SerializationError` names ``key``."""
    if type(value) is int:
        return "i", str(value).encode("ascii")
    if serializer == "pickle":
        try:
            return "p", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - pickling fails in many ways, all told here
            raise SerializationError(
                f"cache key {key!r}: the value cannot be pickled: {exc}"
            ) from None
    try:
        return "j", tagged_json.dumps(value)
    except tagged_json.NotJSON as exc:
        where = f"at {exc.path} " if exc.path else ""
        raise SerializationError(
            f"cache key {key!r}: the value {where}{exc.problem}; store {tagged_json.ALLOWED}, "
            f"or open the cache with serializer='pickle'"
        ) from None
    except ValueError as exc:  # circular references, NaN in strict mode
        raise SerializationError(f"cache key {key!r}: the value cannot be JSON: {exc}") from None


def load(fmt: str, data: bytes, serializer: str) -> Any:
    """The value stored as ``fmt``; :class:`Corrupt` if it cannot be decoded (or is a pickle
    and the backend did not opt in to unpickling)."""
    try:
        if fmt == "i":
            return int(data)
        if fmt == "j":
            return tagged_json.loads(data)
        if serializer != "pickle":
            raise Corrupt("a pickled value, and this cache does not unpickle (serializer='json')")
        return pickle.loads(data)
    except Corrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever stored bytes make the decoder raise
        raise Corrupt(f"the value cannot be decoded ({type(exc).__name__}: {exc})") from None
