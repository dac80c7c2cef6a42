"""How cache backends that serialize turn values into bytes and back (disk, memcache, Redis).

A value is a format letter and bytes: ``i`` an int as decimal ASCII (so Redis ``HINCRBY``
and memcached ``incr`` can count on it), ``j`` tagged JSON (:mod:`scalekit.core.tagged_json`:
datetime, Decimal, bytes, set, dicts with int keys, pydal Rows... round-trip, see
:mod:`scalekit.cache.backends._values`; the default), ``p`` a pickle, written and read
only by a backend opened with ``serializer="pickle"``.
"""

from __future__ import annotations

import pickle
from typing import Any

from scalekit.cache.backends._values import CACHE_JSON
from scalekit.core import tagged_json
from scalekit.core.errors import ConfigError, SerializationError
from scalekit.core.signing import SIGNATURE_SIZE, Signer

SERIALIZERS = ("json", "pickle")


class Corrupt(Exception):
    """Stored bytes that cannot be read as a cache entry; the message says why."""


class Codec:
    """How one backend turns values into bytes and back: its ``serializer`` ("json" or
    "pickle"), and for pickles the ``secret`` that signs them; ``where`` names the backend
    in a :class:`ConfigError`."""

    def __init__(self, serializer: Any, secret: Any, where: str):
        if serializer not in SERIALIZERS:
            raise ConfigError(f"{where}: cache serializer {serializer!r}: use 'json' or 'pickle'")
        if serializer == "pickle" and secret is None:
            raise ConfigError(
                f"{where}: serializer='pickle' needs a secret to sign the pickles (whoever can "
                "write an unsigned pickle into the cache runs code on every app server); open "
                "the backend with open_backend(url, secret=...), a keyword, never in the URL"
            )
        self._signer = Signer(secret, "cache pickle") if serializer == "pickle" else None

    def dump(self, key: str, value: Any) -> tuple[str, bytes]:
        """The format letter and bytes of ``value``; :class:`SerializationError` names ``key``."""
        if type(value) is int:
            return "i", str(value).encode("ascii")
        if self._signer is not None:
            try:
                data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001 - pickling fails in many ways, all told here
                raise SerializationError(
                    f"cache key {key!r}: the value cannot be pickled: {exc}"
                ) from None
            return "p", self._signer.sign(_signed(key, data)) + data
        try:
            return "j", tagged_json.dumps(value, CACHE_JSON)
        except tagged_json.NotJSON as exc:
            where = f"at {exc.path} " if exc.path else ""
            raise SerializationError(
                f"cache key {key!r}: the value {where}{exc.problem}; the cache stores "
                f"{CACHE_JSON.allowed}, or open it with serializer='pickle'"
            ) from None
        except ValueError as exc:  # circular references, NaN in strict mode
            raise SerializationError(
                f"cache key {key!r}: the value cannot be JSON: {exc}"
            ) from None

    def load(self, key: str, fmt: str, data: bytes) -> Any:
        """The value stored under ``key`` as ``fmt``; :class:`Corrupt` if it cannot be decoded,
        or is a pickle this backend does not read or whose signature does not verify."""
        try:
            if fmt == "i":
                return int(data)
            if fmt == "j":
                return tagged_json.loads(data, CACHE_JSON)
            if self._signer is None:
                raise Corrupt(
                    "a pickled value, and this cache does not unpickle (serializer='json')"
                )
            signature, pickled = data[:SIGNATURE_SIZE], data[SIGNATURE_SIZE:]
            if not self._signer.verify(_signed(key, pickled), signature):
                raise Corrupt("a pickle without a valid signature (not unpickled)")
            return pickle.loads(pickled)
        except Corrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever stored bytes make the decoder raise
            raise Corrupt(f"the value cannot be decoded ({type(exc).__name__}: {exc})") from None


def _signed(key: str, pickled: bytes) -> bytes:
    """What a pickle's signature covers: its key too, so no entry is moved to another key."""
    name = key.encode("utf-8", "surrogatepass")
    return len(name).to_bytes(4, "big") + name + pickled
