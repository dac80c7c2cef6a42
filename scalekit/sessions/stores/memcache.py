"""Memcached session store: consistent hashing over the nodes, one round trip per load, and
optionally every session on two nodes (``replicas=2``), so losing a node logs nobody out.

Layout, for app ``shop`` and session ``S``; all three keys live on the same node, the one
rendezvous hashing picks for the record key, so one request talks to one node:

* ``scalekit:s:shop:S`` — the record: a 16-byte header (magic ``SKs1``, saved-at time as a
  double, TTL as uint32, 0 for none) followed by the opaque payload. Its version is the
  node's name and the record's memcached CAS unique (they count per server, so a version
  from a node that has left the ring never matches on another): ``save`` is ``add``
  (create), ``set`` (any) or ``cas``.
* ``scalekit:t:shop:S`` — the last touch: magic ``SKt1`` and the touched-at time.
  ``touched_at`` is the later of the two times, so a save needs no write here.
* ``scalekit:l:shop:S`` — the lock: the holder's token, taken with ``add`` and a TTL.

TTLs: memcached's clock ticks in whole seconds, so an item given N seconds expires after
N-1 to N of them. Every exptime sent is the TTL (rounded up, at least 1 s) plus one second:
records and locks live at least their TTL and at most a second longer, and a lock never
lapses while its holder still counts on it. TTLs are relative (at most 30 days: memcached
reads more as a Unix time).

Why a touch key: ``touch`` must refresh the expiry and ``touched_at`` without rewriting the
payload and without changing the version (a writer that loaded before the touch still wins
its ``cas``). Memcached's ``touch`` (and ``gat``) keep the CAS unique but cannot change the
stored bytes, so the time has to live elsewhere; rewriting the record would copy the payload
and change the CAS. The touch key costs no extra round trip: ``load`` fetches both keys with
one ``gets`` (both are on one node), and ``touch`` sends ``set`` of the touch key with
``noreply`` then ``touch`` of the record on the same connection and waits once.

Round trips: ``load``, ``save``, ``touch``, ``delete`` and ``try_lease`` one each; ``release_lease``
two (the connector's compare-and-delete: ``gets`` the lock, then ``cas`` it with a negative
exptime, so it never removes a lock someone else took meanwhile).

Replicas (``memcache://a,b,c?replicas=2``, or the keyword; 1 to the number of servers): the
three keys of a session live on each of the two nodes that score it highest, among every
configured node whatever its health (the first is the node ``replicas=1`` uses, so turning
replicas on or off logs nobody out: each reads the other's layout). A node that fails moves
no key; it is skipped (one request pays the timeout, then none for ``retry_timeout``) and
tried again every ``retry_timeout`` (``dead_timeout`` does not apply).

* The record is ``SKs2``: the ``SKs1`` header, then its version (a generation and a
  random nonce: memcached CAS uniques differ per node) and its last 8 ancestors' nonces
  (:mod:`._memcache_records`).
* ``load`` reads the first replica that answers and holds the record. A replica that
  answers "missing" first (restarted empty, evicted, or cleared, see below) does not end
  the search: the next one's copy is returned and ``add``-ed back there (for the rest of
  its TTL, with its touch time). A down node is skipped. No session (None) only if every
  replica answered without it: "missing" from a node that lost it (restarted, evicted,
  cleared) is no answer, so while another replica is silent the session is unavailable
  (:class:`StoreUnavailable`, the session policy decides), and a compare-and-set save too.
* ``save`` (4 round trips: ``gets`` + ``cas`` per node) compares ``expected`` with the
  first replica holding a record, then writes each replica best first with ``cas``
  (``add`` where missing) unless it holds something else than the base, one of its
  ancestors, or a version older than they reach. A replica that refuses holds a concurrent
  save (made while another app server compared on the other replica: a node flapping) or
  a deletion: its record is put back where ours was written, and the save succeeds only if
  that record was made from ours (ours among its ancestors, or more than 8 generations
  newer), else it is a conflict — the concurrent save got there first. An unconditional
  save (``ANY``) always succeeds: ours came first, then the concurrent write.
* ``delete`` replaces the record by a deletion mark (``SKd1``, kept an hour) on every
  replica: a replica still holding the session (it missed the delete) cannot bring it back
  through a save or a repair — a load stops at the mark, a save made from an older
  version is refused by it.
* ``touch`` goes to every replica; one that lacks the record gets a copy (so a node back
  empty is repaired for the sessions of which it is the second replica too, which loads
  never read). ``try_lease`` locks on the first replica that answers; ``release_lease``
  tries each in turn.
* A replica that misses a write (down, timed out) that another replica got is stale: the
  connector remembers the key and the version written, and before sending the node
  anything else once it answers again, drops its copy where still older (a
  compare-and-delete: a newer write another app server made there meanwhile stays; past
  10,000 keys it empties the node instead); loads then go on to the other replica and
  repair it. A write that landed nowhere marks nothing (the copy a silent node keeps may
  be the only one). That memory is per process: another app server that never saw the
  node fail can read its older copy until then (a save made from it is refused).

What replicas do not protect against: both replicas of a session lost together (two nodes
down or restarted at once, or one restarted empty while the other is down); memcached
evicting the session on both nodes; an app server restarting before it cleared a node it
skipped (empty such a node: restart it); a network split in which app servers each reach
a different replica (each side's saves succeed; one side's are lost when it heals).

The client (settings, URL options, placement, node failures, the per-process cluster) and
the lease primitive are :mod:`scalekit.connect.memcache`'s, shared with the memcache cache.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from pymemcache.client.base import Client

from scalekit.connect.memcache import (
    DEFAULT_MAX_VALUE_SIZE,
    MemcacheClient,
    client_options,
    exptime,
    node_name,
    release_lease,
    take_lease,
)
from scalekit.core.checks import MAX_TTL, check_lease
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError, InvalidArgument, SerializationError, StoreUnavailable
from scalekit.core.urls import BackendURL
from scalekit.sessions.stores._memcache_records import (
    DELETED,
    DELETED_EXPIRE,
    RECORD,
    RECORD_MAGIC,
    REPLICATED,
    TOUCH,
    TOUCH_MAGIC,
    Stored,
    encode,
    made_after,
    made_from,
    older_than,
    parse,
    put,
)
from scalekit.sessions.stores.base import (
    ANY,
    CleanupStats,
    Progress,
    Record,
    SessionStore,
    check_payload,
    check_session_id,
    now,
    ttl_seconds,
)

__all__ = ["DEFAULT_MAX_VALUE_SIZE", "MemcacheStore"]

log = logging.getLogger("scalekit.sessions")

_T = TypeVar("_T")

_OPTIONS = {"replicas": int}  # the store's URL options beyond the client's


class MemcacheStore(MemcacheClient, SessionStore):
    """Sessions in one or more memcached servers (``memcache://h1:11211,h2:11211``).

    Thread-safe (a connection pool per node) and fork-safe (clients are created lazily in
    the process that uses them). Records expire natively; TTLs are relative, at most 30 days.
    ``url`` names the store in errors and logs (``from_url`` passes the masked URL);
    ``client_options`` are those of :class:`~scalekit.connect.memcache.ClientSettings`
    (``timeout``, ``max_value_size``...). The largest value stored is
    :data:`DEFAULT_MAX_VALUE_SIZE` bytes unless ``max_value_size`` says otherwise.
    """

    kind = "memcache"

    @renamed_keyword("app", "app_name")
    def __init__(
        self,
        servers: Iterable[tuple[str, int]],
        app_name: str = "app",
        *,
        url: str | None = None,
        replicas: int = 1,
        **client_options: Any,
    ):
        super().__init__(app_name)
        self._configure_client(
            servers,
            url,
            client_options,
            min_value_size=(RECORD if replicas == 1 else REPLICATED).size + 1,
            error=StoreUnavailable,
            label="session store",
            logger=log,
            replicas=replicas,
            stale=older_than,
        )
        self._prefix = b"scalekit:%s:" + self.app_name.encode("ascii") + b":"

    @classmethod
    @renamed_keyword("app", "app_name")
    def from_url(
        cls, settings: BackendURL, app_name: str = "app", *, create: bool = True, **options: Any
    ) -> MemcacheStore:
        """Open from ``memcache://h1:11211,h2:11211?timeout=0.5&replicas=2``; keywords
        override the URL. ``create`` changes nothing: memcached keeps no store per app."""
        opened = client_options(settings, options, what="a memcache store", extra=_OPTIONS)
        return cls(app_name=app_name, **opened)

    # -- the protocol -------------------------------------------------------------------
    def load(self, sid: str) -> Record | None:
        keys = [self._key(b"s", sid), self._key(b"t", sid)]
        if self.replicas > 1:
            return self._load_replicated(sid, keys)
        server, found = self._run(
            "load a session", keys[0], lambda conn: (conn.server, conn.gets_many(keys))
        )
        value, cas = found.get(keys[0], (None, 0))
        stored = self._stored(sid, value)
        if stored is None:
            return None
        touched_at = self._touched_at(sid, stored, found.get(keys[1], (None,))[0])
        return Record(stored.data, (node_name(server), int(cas)), touched_at)

    def save(self, sid: str, data: bytes, ttl: int | None, expected: Any) -> bool:
        key = self._key(b"s", sid)
        ttl = ttl_seconds(ttl)
        expire = exptime(ttl)
        data = check_payload(data)
        header = REPLICATED if self.replicas > 1 else RECORD
        if header.size + len(data) > self.max_value_size:
            raise SerializationError(
                f"session store {self.url}: a session of {len(data):,} bytes is over the "
                f"{self.max_value_size - header.size:,}-byte limit of memcached items; store "
                "less in the session (or start memcached with a bigger -I and raise "
                "max_value_size)"
            )
        if self.replicas > 1:
            return self._save_replicated(key, data, ttl, expected, expire)
        value = RECORD.pack(RECORD_MAGIC, now(), ttl or 0) + data
        if expected is ANY:
            written = self._run(
                "save a session", key, lambda conn: conn.set(key, value, expire, noreply=False)
            )
        elif expected is None:
            written = self._run(
                "create a session", key, lambda conn: conn.add(key, value, expire, noreply=False)
            )
        else:
            loaded_from, cas = _version(expected, str)

            def command(conn: Client) -> bool | None:
                if node_name(conn.server) != loaded_from:
                    return False  # loaded from a node that has since left or rejoined the ring
                return conn.cas(key, value, cas, expire, noreply=False)

            written = self._run("save a session", key, command)
        return written is True

    def touch(self, sid: str, ttl: int | None) -> None:
        record_key, touch_key = self._key(b"s", sid), self._key(b"t", sid)
        expire = exptime(ttl_seconds(ttl))
        stamp = TOUCH.pack(TOUCH_MAGIC, now())

        def command(conn: Client) -> bool:
            # The set is answered by nothing; the touch's reply, read after it on the same
            # connection, proves the server has processed both.
            conn.set(touch_key, stamp, expire, noreply=True)
            if conn.touch(record_key, expire, noreply=False):
                return True
            conn.delete(touch_key, noreply=True)  # no record: leave no touch time behind
            return False

        found = dict(self._each("touch a session", record_key, command))
        if any(found.values()) and not all(found.values()):
            self._copy_to_empty(sid, found)

    def delete(self, sid: str) -> None:
        record_key, touch_key = self._key(b"s", sid), self._key(b"t", sid)

        def command(conn: Client) -> None:
            conn.delete(touch_key, noreply=True)
            if self.replicas > 1:  # a deletion mark: no stale copy or racing save revives it
                conn.set(record_key, DELETED, DELETED_EXPIRE, noreply=False)
            else:
                conn.delete(record_key, noreply=False)

        skipped: list[str] = []
        for _ in self._each("delete a session", record_key, command, skipped=skipped):
            pass
        self._remember_missed(skipped, record_key, None)  # the mark is on another replica

    def try_lease(self, sid: str, token: str, ttl: float) -> bool:
        record_key, lock_key = self._key(b"s", sid), self._key(b"l", sid)
        expire = exptime(_lock_ttl(check_lease(token, ttl)))
        holder = token.encode("utf-8")
        for _, taken in self._each(
            "lock a session", record_key, lambda conn: take_lease(conn, lock_key, holder, expire)
        ):
            return taken  # on the first replica that answers
        raise AssertionError("unreachable: _each yields or raises")

    def release_lease(self, sid: str, token: str) -> None:
        record_key, lock_key = self._key(b"s", sid), self._key(b"l", sid)
        if not isinstance(token, str):
            return  # try_lease takes only str tokens: this one holds nothing
        holder = token.encode("utf-8")
        for _, released in self._each(
            "unlock a session",
            record_key,
            lambda conn: release_lease(conn, lock_key, lambda found: found == holder),
        ):
            if released:
                return  # (taken on a later replica when the first was down: tried in turn)

    def cleanup(
        self,
        cutoff: float,
        *,
        force: bool = False,
        dry_run: bool = False,
        batch: int = 1000,
        progress: Progress | None = None,
    ) -> CleanupStats:
        """Nothing to do: memcached drops expired entries (and locks) by itself."""
        return CleanupStats(
            note="memcached expires sessions by itself; nothing to clean up", self_expiring=True
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} app_name={self.app_name!r}>"

    # -- with replicas ------------------------------------------------------------------
    def _load_replicated(self, sid: str, keys: list[bytes]) -> Record | None:
        """The record of the first replica that has it; replicas that answered without it
        first (restarted empty, evicted, caught up) get a copy. None only if every replica
        answered without it: one that answers "missing" may have lost it, so while another
        cannot be asked, the session is unavailable, not gone (the session policy decides)."""
        empty: list[str] = []
        for name, found in self._each_replica(
            "load a session", keys[0], lambda conn: conn.get_many(keys)
        ):
            value = found.get(keys[0])
            if value == DELETED:
                return None  # deleted: whatever a later replica still holds
            stored = self._stored(sid, value)
            if stored is None:
                empty.append(name)
                continue
            touched_at = self._touched_at(sid, stored, found.get(keys[1]))
            self._repair(empty, keys, value, stored, touched_at)
            return Record(stored.data, stored.version, touched_at)
        if len(empty) < self.replicas:
            raise self._unsure("load a session", len(empty))
        return None

    def _copy_to_empty(self, sid: str, found: dict[str, bool]) -> None:
        """Copy a session onto the replicas where ``found`` says it is missing (a node
        back empty: a load reads the first replica only, so the others wait for this, a
        touch, or the next save)."""
        keys = [self._key(b"s", sid), self._key(b"t", sid)]
        source = next(name for name, there in found.items() if there)
        with contextlib.suppress(StoreUnavailable):
            copy = self._run_at(source, "repair a session", lambda conn: conn.get_many(keys))
            stored = self._stored(sid, copy.get(keys[0]))
            if stored is not None:
                touched_at = self._touched_at(sid, stored, copy.get(keys[1]))
                empty = [name for name, there in found.items() if not there]
                self._repair(empty, keys, copy[keys[0]], stored, touched_at)

    def _repair(
        self, names: list[str], keys: list[bytes], value: bytes, stored: Stored,
        touched_at: float,
    ) -> None:  # fmt: skip
        """Copy a record, and its touch time, onto the replicas ``names`` that lack it,
        with ``add`` (a write that got there meanwhile wins), for the rest of its TTL. Best
        effort: a replica that fails now is repaired by a later load."""
        left = stored.ttl and touched_at + stored.ttl - now()
        if not names or (stored.ttl and left <= 0):
            return
        expire = exptime(left or None)
        stamp = TOUCH.pack(TOUCH_MAGIC, touched_at)

        def command(conn: Client) -> None:
            conn.add(keys[1], stamp, expire, noreply=True)
            conn.add(keys[0], value, expire, noreply=False)

        for name in names:
            with contextlib.suppress(StoreUnavailable):
                self._run_at(name, "repair a session", command)

    def _save_replicated(
        self, key: bytes, data: bytes, ttl: int | None, expected: Any, expire: int
    ) -> bool:
        """Compare with the first replica that holds a record, then write every replica,
        best first, each unless it holds a version as new or a later deletion (see the
        module notes)."""
        if expected is not ANY and expected is not None:
            _version(expected, int)
        current, known = self._current(key)
        if current is None and expected is not None and expected is not ANY:
            if len(known) < self.replicas and all(v != DELETED for v, _ in known.values()):
                raise self._unsure("save a session", len(known))  # maybe on the silent one
            return False
        base = current and current.version
        if expected is not ANY and base != expected:
            return False
        ours = made_after(current, now(), ttl or 0, data)
        value = encode(ours)
        written: list[str] = []

        def command(conn: Client) -> tuple[bool, bytes | None]:
            known_here = known.pop(node_name(conn.server), None)
            return put(conn, key, value, ours, base, known_here, expire)

        skipped: list[str] = []  # replicas that miss this save, once another one got it
        for name, (done, held) in self._each_replica(
            "save a session", key, command, skipped=skipped
        ):
            if not done:  # this replica holds a newer or concurrent version, or a deletion
                if held is None:  # it kept changing under us: the next save settles it
                    return expected is ANY or bool(written)
                winner = _version_of(held)
                self._remember_missed(skipped, key, winner)
                if written:
                    self._restore(written, key, value, held, winner)
                # ANY: ours came first, then the concurrent write or deletion that won;
                # else ours is kept only inside a later save made from it
                return expected is ANY or (bool(written) and made_from(held, ours))
            self._remember_missed(skipped, key, ours.version)  # older than this one's now
            skipped.clear()
            written.append(name)
        self._remember_missed(skipped, key, ours.version)
        return True

    def _current(self, key: bytes) -> tuple[Stored | None, dict[str, Any]]:
        """The record of the first replica that holds one, skipping corrupt copies as
        :meth:`load` does (None: none does, or it is deleted), and each replica's ``gets``
        read on the way, by node."""
        known: dict[str, Any] = {}
        for name, (value, cas) in self._each_replica(
            "save a session", key, lambda conn: conn.gets(key)
        ):
            known[name] = value, cas
            current = None if value is None else parse(value)
            if current is not None or value == DELETED:
                return current, known
        return None, known

    def _restore(
        self, names: list[str], key: bytes, ours: bytes, held: bytes,
        version: tuple[int, int] | None,
    ) -> None:  # fmt: skip
        """Put ``held`` (of ``version``; None: a deletion mark) back on the replicas
        ``names`` where ``ours`` replaced it, unless they changed since; one that fails
        drops ours when it answers again."""
        stored = parse(held)
        expire = exptime(stored.ttl or None) if stored else DELETED_EXPIRE

        def command(conn: Client) -> None:
            found, cas = conn.gets(key)
            if found == ours:
                conn.cas(key, held, cas, expire, noreply=False)

        for name in names:
            try:
                self._run_at(name, "save a session", command)
            except StoreUnavailable:
                self._remember_missed([name], key, version)

    # -- helpers ------------------------------------------------------------------------
    def _unsure(self, action: str, answered: int) -> StoreUnavailable:
        return StoreUnavailable(
            f"session store {self.url} failed to {action}: the {answered} memcached "
            f"replica(s) of its {self.replicas} that answered do not hold it (they may have "
            "lost it: restarted, evicted), and the others did not answer"
        )

    def _each(
        self, action: str, key: bytes, command: Callable[[Client], _T], *,
        skipped: list[str] | None = None,
    ) -> Iterator[tuple[str | None, _T]]:  # fmt: skip
        """``command`` on each replica of ``key`` that answers, best first (see
        :meth:`~scalekit.connect.memcache.Cluster.each_replica`); without replicas, on its
        node (``None``)."""
        if self.replicas > 1:
            yield from self._each_replica(action, key, command, skipped=skipped)
        else:
            yield None, self._run(action, key, command)

    def _stored(self, sid: str, value: bytes | None) -> Stored | None:
        """The record in ``value``; None if there is none (missing, deleted, corrupt)."""
        if value is None or value == DELETED:
            return None
        stored = parse(value)
        if stored is None:
            log.warning(
                "session store %s: session %s has a corrupt record (%d bytes, no scalekit "
                "header, or impossible numbers); treating it as missing",
                self.url, _short(sid), len(value),
            )  # fmt: skip
        return stored

    def _touched_at(self, sid: str, stored: Stored, stamp: bytes | None) -> float:
        """The later of the save time and the touch time ``stamp`` (if any, and sound)."""
        if stamp is None:
            return stored.saved_at
        if len(stamp) == TOUCH.size and stamp[:4] == TOUCH_MAGIC:
            touched_at = TOUCH.unpack(stamp)[1]
            if math.isfinite(touched_at):  # else forged: inf or nan
                return max(stored.saved_at, touched_at)
        log.warning(
            "session store %s: session %s has a corrupt touch time; using its save time",
            self.url, _short(sid),
        )  # fmt: skip
        return stored.saved_at

    def _key(self, kind: bytes, sid: str) -> bytes:
        return self._prefix % kind + check_session_id(sid).encode("ascii")


def _version_of(held: bytes | None) -> tuple[int, int] | None:
    """The version of a record a replica held; None for a deletion mark (or nothing)."""
    stored = None if held is None else parse(held)
    return stored and stored.version


def _short(sid: str) -> str:
    """A session id shortened for logs: enough to correlate, too little to hijack."""
    return sid[:6] + "…"


def _version(version: Any, first: type) -> tuple[Any, int]:
    """Check a version load returned: ``(node, cas unique)`` without replicas (CAS uniques
    count per server, so the node is part of it; ``first`` is str), ``(generation, nonce)``
    with them (``first`` is int)."""
    if (
        isinstance(version, tuple)
        and len(version) == 2
        and isinstance(version[0], first)
        and not isinstance(version[0], bool)
        and isinstance(version[1], int)
        and not isinstance(version[1], bool)
        and version[1] >= 0
    ):
        return version
    raise InvalidArgument(f"expected version {version!r:.40} is not one this store's load returned")


def _lock_ttl(ttl: float) -> float:
    """A positive lock TTL (``check_lease``) that memcached can keep: at most 30 days."""
    if ttl > MAX_TTL:
        raise ConfigError(f"lock TTL {ttl!r} must be at most 30 days (memcached's limit)")
    return ttl
