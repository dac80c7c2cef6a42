"""MemcacheBackend: entries on one or more memcached nodes (``memcache://m1:11211,m2:11211``).

The client is :mod:`scalekit.connect.memcache`'s, shared with the memcache session store:
URL options, rendezvous hashing over the nodes and a pool per node (made lazily in each
process), a dead node skipped for ``retry_timeout`` then out of the ring for
``dead_timeout``, the compare-and-set loop of ``add`` and the lease primitive (taken with
``add``, an expired one replaced by ``cas``; released by a compare-and-delete).
pymemcache's HashClient is not used: for a node in its retry window it answers
"missing"/"not stored" instead of failing, so the failure policy could never apply.

Keys, for app ``shop``: ``scalekit:c:shop:v:<key>`` when the key is printable ASCII without
spaces and the name fits memcached's 250 bytes, else ``scalekit:c:shop:h:<sha256 of key>``;
leases ``scalekit:c:shop:l:<v:key or h:sha256>``.

Values: an entry is the disk backend's record (:mod:`._diskfile`: header with the store and
expiry times, the key, the value in :mod:`._codec`'s format), memcached flags 0. Expiry is
checked from the header, so TTLs are exact although memcached's clock ticks in seconds: the
exptime sent is the TTL rounded up plus one second (relative, at most 30 days). A counter
made by ``incr`` on a missing key is a bare number, ``value + 2**62`` (memcached counts
unsigned 64-bit ints), its flags the second it was created, so ``incr``/``decr`` run
natively and atomically; a missing one is created with ``add`` (a lost race just retries).
The stored number stays below ``2**63`` while the count is within ``±2**61``: memcached
(1.6.18 and older) refuses to ``incr`` a number of ``2**63`` or more as "non-numeric" when
the bytes left after it in its slab chunk by an older item hold a ``-`` (its sign check
runs ``strchr`` past the value), so an offset of ``2**63`` failed at random. A bare number
memcached refuses (one so large, or one written with the former ``2**63`` offset: read as
such from ``3 * 2**61`` up) is rewritten as a record. Counters under a hashed name, and
ints stored by ``set``, count with ``gets``/``cas``.

``clear`` lists keys with ``lru_crawler metadump hash`` on every node (memcached 1.6, LRU
crawler on by default) and deletes this app's matches, reading the key of hashed names from
their records: correct, but it walks every key of every node, so keep it for deploys and
admin tasks. A node that is down makes it fail (nothing is half-reported as cleared).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError

from scalekit.cache.backends import _codec
from scalekit.cache.backends import _diskfile as record
from scalekit.cache.backends.base import CacheBackend, Entry, check_key, check_ttl
from scalekit.connect.memcache import (
    MemcacheClient,
    add_unless_live,
    client_options,
    dump_keys,
    exptime,
    node_name,
    release_lease,
    take_lease,
)
from scalekit.core.checks import check_lease
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import (
    CacheUnavailable,
    InvalidArgument,
    InvalidArgumentType,
    SerializationError,
)
from scalekit.core.urls import BackendURL

log = logging.getLogger("scalekit.cache")

_OFFSET = 1 << 62  # a counter n is stored as n + 2**62: memcached counts unsigned
_FORMER = 1 << 63  # the offset before; stored numbers from 3 * 2**61 up are read with it
_PLAIN = re.compile(rb"[!-~]+")  # printable ASCII, no space: usable as is in a key
_MAX_NAME = 248  # memcached's 250 bytes, less the lease's extra "l:"


class _Serde:
    """Hands pymemcache's replies back as ``(bytes, flags)``: flags tell counters apart."""

    def serialize(self, key: bytes, value: bytes) -> tuple[bytes, int]:
        return value, 0

    def deserialize(self, key: bytes, value: bytes, flags: int) -> tuple[bytes, int]:
        return value, flags


class MemcacheBackend(MemcacheClient, CacheBackend):
    """Entries on memcached nodes; thread-safe, fork-safe (pools open lazily per process).

    ``url`` names the backend in errors and logs (``from_url`` passes the masked URL);
    ``client_options`` are those of :class:`~scalekit.connect.memcache.ClientSettings`
    (``timeout``, ``max_value_size``...).
    """

    kind = "memcache"
    shared = True
    option_label = "cache option"

    @renamed_keyword("app", "app_name")
    def __init__(
        self,
        servers: Iterable[tuple[str, int]],
        app_name: str = "app",
        *,
        serializer: str = "json",
        secret: str | bytes | Sequence[str | bytes] | None = None,
        url: str | None = None,
        **client_options: Any,
    ):
        super().__init__(app_name)
        self._configure_client(
            servers,
            url,
            client_options,
            min_value_size=64,
            error=CacheUnavailable,
            label="cache",
            logger=log,
            serde=_Serde(),
        )
        self._codec = _codec.Codec(serializer, secret, self.url)
        self.serializer = serializer
        self._prefix = f"scalekit:c:{self.app_name}:".encode("ascii")

    @classmethod
    @renamed_keyword("app", "app_name")
    def from_url(
        cls, settings: BackendURL, app_name: str = "app", *, secret: Any = None, **options: Any
    ) -> MemcacheBackend:
        """Open ``memcache://h1:11211,h2:11211?timeout=0.5``; keywords override the URL (the
        ``secret`` that signs pickles is a keyword only, never in a URL)."""
        opened = client_options(
            settings, options, what="a memcache cache", extra={"serializer": str}
        )
        return cls(app_name=app_name, secret=secret, **opened)

    def __repr__(self) -> str:
        return f"<MemcacheBackend {self.url} app_name={self.app_name!r}>"

    # -- values -------------------------------------------------------------------------
    def get(self, key: str) -> Entry | None:
        name, _ = self._name(key)
        found = self._run("read", name, lambda conn: conn.get(name))
        if found is None:
            return None
        value, flags = found
        if flags:
            return Entry(_counter(key, value), float(flags))
        entry = self._record(key, value)
        if entry is None or not entry[0].live(time.time()):
            return None
        header, data = entry
        try:
            return Entry(self._codec.load(key, header.fmt, data), header.stored_at)
        except _codec.Corrupt as exc:
            log.warning("memcache cache %s: entry %r: %s; treated as a miss", self.url, key, exc)
            return None

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        name, _ = self._name(key)
        blob, expire = self._blob(key, value, ttl)
        self._run("write", name, lambda conn: conn.set(name, blob, expire, noreply=False))

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        name, _ = self._name(key)
        blob, expire = self._blob(key, value, ttl)

        def live(found: tuple[bytes, int]) -> bool:  # a counter (flags) or a live record
            return bool(found[1]) or self._live(key, found[0])

        return self._run(
            "write", name, lambda conn: add_unless_live(conn, name, blob, expire, live)
        )

    def delete(self, key: str) -> bool:
        name, _ = self._name(key)
        return bool(self._run("delete", name, lambda conn: conn.delete(name, noreply=False)))

    def incr(self, key: str, delta: int = 1) -> int:
        name, hashed = self._name(key)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise InvalidArgumentType(
                f"increment of {key!r}: the delta must be an int, got {delta!r}"
            )
        if not -_FORMER < delta < _FORMER:
            raise InvalidArgument(f"increment of {key!r}: the delta must fit in 64 bits")

        def command(conn: Client) -> int | bool | None:
            native = not hashed
            for _ in range(5):
                if native:
                    try:
                        count = conn.incr(name, delta) if delta >= 0 else conn.decr(name, -delta)
                    except MemcacheClientError:  # a record, or a number memcached refuses
                        native = False
                    else:
                        if count is not None:
                            return _counted(int(count))
                        start = str(_OFFSET).encode("ascii")
                        conn.add(name, start, 0, noreply=False, flags=int(time.time()))
                        continue  # count on it (or on the one a racing worker added)
                result = self._incr_record(conn, key, name, delta)
                if result is not False:
                    return result
            return False

        result = self._run("increment", name, command)
        if result is False:  # raised here: inside the command it would count as a node failure
            raise CacheUnavailable(f"memcache cache {self.url}: increment of {key!r} kept "
                                   "racing with other writers; try again")  # fmt: skip
        if result is None:
            raise InvalidArgument(f"cannot increment cache key {key!r}: it holds no 64-bit int")
        return result

    def _incr_record(self, conn: Client, key: str, name: bytes, delta: int) -> int | bool | None:
        """Add ``delta`` to a record with ``gets``/``cas`` (a bare counter found there is
        rewritten as a record): the new value, ``None`` if it holds no int, ``False`` if
        another writer won the race."""
        found, cas = conn.gets(name)
        stamp = time.time()
        current, expires_at = 0, None
        if found is not None and found[1]:
            current = _counter(key, found[0])
        elif found is not None:
            entry = self._record(key, found[0])
            if entry is not None and entry[0].live(stamp):
                header, data = entry
                if header.fmt != "i":
                    return None
                current, expires_at = int(data), header.expires_at
        value = current + delta
        blob = record.build(key, "i", str(value).encode("ascii"), stamp, expires_at)
        expire = exptime(None if expires_at is None else max(expires_at - stamp, 0.001))
        if found is None:
            stored = conn.add(name, blob, expire, noreply=False)
        else:
            stored = conn.cas(name, blob, cas, expire, noreply=False)
        return value if stored else False

    def clear(self, pattern: re.Pattern[str] | None = None) -> int:
        """Delete this app's matching entries on every node (see the module docstring)."""
        plain, hashed = self._prefix + b"v:", self._prefix + b"h:"

        def command(conn: Client) -> int:
            keys = dump_keys(conn.server, self.connect_timeout, self.timeout)
            names = [name for name in keys if name.startswith((plain, hashed))]
            if pattern is not None:
                names = self._matching(conn, names, pattern)
            return sum(bool(conn.delete(name, noreply=False)) for name in names)

        return sum(self._run_on_each("clear", command))

    def _matching(self, conn: Client, names: list[bytes], pattern: re.Pattern) -> list[bytes]:
        """The names among ``names`` (on ``conn``'s node) whose key ``pattern`` matches."""
        start = len(self._prefix) + 2
        keys = {n: n[start:].decode("ascii") for n in names if n[start - 2 : start] == b"v:"}
        hashed = [name for name in names if name not in keys]
        for begin in range(0, len(hashed), 100):
            found = conn.get_many(hashed[begin : begin + 100])
            for name, (value, flags) in found.items():
                try:
                    if not flags:
                        keys[name] = record.split(value)[1]
                except record.Corrupt:
                    continue  # cannot tell its key: left alone
        return [name for name, key in keys.items() if pattern.match(key)]

    # -- leases -------------------------------------------------------------------------
    def try_lease(self, key: str, token: str, ttl: float) -> bool:
        ttl = check_lease(token, ttl)
        name = self._lease_name(key)
        stamp = time.time()
        holder, expire = f"{token} {stamp + ttl!r}".encode(), exptime(ttl)

        def live(found: tuple[bytes, int]) -> bool:
            return _lease(found[0])[1] > stamp

        return self._run(
            "take a lease", name, lambda conn: take_lease(conn, name, holder, expire, live)
        )

    def release_lease(self, key: str, token: str) -> bool:
        name = self._lease_name(key)

        def held(found: tuple[bytes, int]) -> bool:
            return _lease(found[0])[0] == token

        return self._run("release a lease", name, lambda conn: release_lease(conn, name, held))

    def server_stats(self) -> dict[str, Any]:
        """Each node's item count, memory and hit counts, by ``host:port``."""
        fields = ("curr_items", "bytes", "limit_maxbytes", "get_hits", "get_misses",
                  "evictions", "curr_connections", "uptime", "version")  # fmt: skip
        stats = self._run_on_each("read stats", lambda conn: (conn.server, conn.stats()))
        return {
            node_name(server): {
                name: (value.decode() if isinstance(value, bytes) else value)
                for name, value in ((f, found.get(f.encode())) for f in fields)
            }
            for server, found in stats
        }

    # -- helpers ------------------------------------------------------------------------
    def _name(self, key: str) -> tuple[bytes, bool]:
        """The memcached key of ``key``'s entry, and whether ``key`` had to be hashed."""
        raw = check_key(key).encode("utf-8", "surrogatepass")
        if _PLAIN.fullmatch(raw) and len(self._prefix) + 2 + len(raw) <= _MAX_NAME:
            return self._prefix + b"v:" + raw, False
        return self._prefix + b"h:" + hashlib.sha256(raw).hexdigest().encode("ascii"), True

    def _lease_name(self, key: str) -> bytes:
        name, _ = self._name(key)
        return self._prefix + b"l:" + name[len(self._prefix) :]

    def _blob(self, key: str, value: Any, ttl: float | None) -> tuple[bytes, int]:
        """The record of ``value`` and its memcached exptime; too large raises, naming key."""
        ttl = check_ttl(ttl)
        fmt, data = self._codec.dump(key, value)
        stamp = time.time()
        blob = record.build(key, fmt, data, stamp, None if ttl is None else stamp + ttl)
        if len(blob) > self.max_value_size:
            raise SerializationError(
                f"cache key {key!r}: the value takes {len(blob):,} bytes, over the "
                f"{self.max_value_size:,}-byte limit of memcached items (start memcached "
                "with a bigger -I and raise max_value_size, or store less)"
            )
        return blob, exptime(ttl)

    def _record(self, key: str, value: bytes) -> tuple[record.Header, bytes] | None:
        """Header and value bytes of a record for ``key``; ``None`` (logged) if damaged."""
        try:
            header, stored_key, data = record.split(value)
        except record.Corrupt as exc:
            log.warning("memcache cache %s: entry %r is corrupt (%s); treated as a miss",
                        self.url, key, exc)  # fmt: skip
            return None
        return (header, data) if stored_key == key else None  # else: a SHA-256 collision

    def _live(self, key: str, value: bytes) -> bool:
        entry = self._record(key, value)
        return entry is not None and entry[0].live(time.time())


def _counted(stored: int) -> int:
    """The count a bare counter's stored number stands for (see the module docstring)."""
    return stored - (_FORMER if stored >= 3 << 61 else _OFFSET)


def _counter(key: str, value: bytes) -> int:
    try:
        return _counted(int(value))
    except ValueError:
        raise CacheUnavailable(f"cache key {key!r}: memcached holds a damaged counter") from None


def _lease(value: bytes) -> tuple[str, float]:
    """(token, expiry) of a lease value; a damaged one reads as expired."""
    try:
        token, expires = value.decode("utf-8").rsplit(" ", 1)
        return token, float(expires)
    except (UnicodeDecodeError, ValueError):
        return "", 0.0
