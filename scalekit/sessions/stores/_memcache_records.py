"""The records of the memcached session store, and the rule that writes them on replicas.

* ``SKs1`` (:data:`RECORD`), without replicas: magic, saved-at time (double), TTL (uint32,
  0 for none), then the payload. Its version is the node and the memcached CAS unique.
* ``SKs2`` (:data:`REPLICATED`), with replicas: the same, then the version — a generation
  (the save time's microseconds for a new session, then one more per save) and a random
  nonce — and the nonces of its last :data:`ANCESTORS` ancestors, parent first (0: none).
  CAS uniques differ per node, so the version lives in the value. Either layout reads
  both; a ``SKs1`` record's version is (its save time's microseconds, 0), no ancestors,
  so a record written without replicas outranks replicated versions saved before it.
* ``SKd1`` (:data:`DELETED`): with replicas, a deleted session, for an hour.
* ``SKt1`` (:data:`TOUCH`): the touch key's value, the touched-at time.

:func:`put` writes a version on one replica: over nothing, its base, one of its ancestors,
a version older than they reach (a replica that missed writes) or a corrupt record; over a
deletion only a version made from none. Anything else is a concurrent save (made from the
same base or an ancestor by an app server that compared on another replica) or a later
one, and refuses it; :func:`made_from` then tells whether that record was made from ours.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any, NamedTuple

from pymemcache.client.base import Client

from scalekit.connect.memcache import exptime

__all__ = [
    "ANCESTORS", "DELETED", "DELETED_EXPIRE", "RECORD", "RECORD_MAGIC", "REPLICATED",
    "TOUCH", "TOUCH_MAGIC", "Stored", "encode", "made_after", "made_from", "older_than",
    "parse", "put",
]  # fmt: skip

RECORD = struct.Struct("!4sdI")  # magic, saved_at, ttl (0: no expiry)
RECORD_MAGIC = b"SKs1"
# The same, then the version (generation, nonce) and its ancestors' nonces, parent first.
REPLICATED = struct.Struct("!4sdIQQ8Q")
ANCESTORS = 8
REPLICATED_MAGIC = b"SKs2"
DELETED = b"SKd1"  # with replicas, a deleted session's record, kept for DELETED_EXPIRE
DELETED_EXPIRE = exptime(3600)
_GENERATIONS = 1 << 63  # a sound generation is below: saves add one each, in 64 bits
_PUT_ATTEMPTS = 5  # tries of a replica write racing with other writers
TOUCH = struct.Struct("!4sd")  # magic, touched_at
TOUCH_MAGIC = b"SKt1"


class Stored(NamedTuple):
    """A record's fields, either layout."""

    saved_at: float
    ttl: int  # 0: none
    version: tuple[int, int]  # (generation, nonce); a SKs1 record: (its save time's, 0)
    ancestors: tuple[int, ...]  # the nonces of the versions it was made from, parent first
    data: bytes


def parse(value: bytes) -> Stored | None:
    """The fields of a record, either layout; None if ``value`` is none (or a deletion),
    or holds numbers no save writes (a forged record: a save time that is not a finite
    number, a generation outside ``0 <= g < 2**63``)."""
    if value[:4] == REPLICATED_MAGIC and len(value) >= REPLICATED.size:
        _, saved_at, ttl, made, nonce, *ancestors = REPLICATED.unpack_from(value)
        ancestors = tuple(ancestor for ancestor in ancestors if ancestor)
        data = value[REPLICATED.size :]
    elif value[:4] == RECORD_MAGIC and len(value) >= RECORD.size:
        _, saved_at, ttl = RECORD.unpack_from(value)
        made, nonce, ancestors, data = -1, 0, (), value[RECORD.size :]
        if math.isfinite(saved_at):
            made = generation(saved_at)
    else:
        return None
    if not (math.isfinite(saved_at) and 0 <= made < _GENERATIONS):
        return None
    return Stored(saved_at, ttl, (made, nonce), ancestors, data)


def made_after(current: Stored | None, saved_at: float, ttl: int, data: bytes) -> Stored:
    """The record of a save of ``data`` made from ``current`` (None: from no record)."""
    nonce = random.randrange(1, 1 << 63)
    if current is None:
        return Stored(saved_at, ttl, (generation(saved_at), nonce), (), data)
    ancestors = (current.version[1], *current.ancestors)
    return Stored(
        saved_at, ttl, (current.version[0] + 1, nonce),
        tuple(ancestor for ancestor in ancestors if ancestor)[:ANCESTORS], data,
    )  # fmt: skip


def encode(stored: Stored) -> bytes:
    """The ``SKs2`` bytes of ``stored``."""
    padded = (*stored.ancestors, *[0] * ANCESTORS)[:ANCESTORS]
    return REPLICATED.pack(
        REPLICATED_MAGIC, stored.saved_at, stored.ttl, *stored.version, *padded
    ) + stored.data  # fmt: skip


def put(
    conn: Client, key: bytes, value: bytes, ours: Stored, base: tuple[int, int] | None,
    known: tuple[bytes | None, Any] | None, expire: int,
) -> tuple[bool, bytes | None]:  # fmt: skip
    """Write ``value`` (``ours``, made from ``base``) on this node if it holds nothing or
    what :func:`may_replace` allows; ``known``: its ``gets``, if just read. ``(True,
    None)`` if written, else ``(False, what it holds)``."""
    found, cas = known or conn.gets(key)
    for _ in range(_PUT_ATTEMPTS):
        if found is None:
            if conn.add(key, value, expire, noreply=False):
                return True, None
        elif not may_replace(found, ours, base):
            return False, found
        elif conn.cas(key, value, cas, expire, noreply=False):
            return True, None
        found, cas = conn.gets(key)  # raced with another write: look again
    return False, found


def may_replace(found: bytes, ours: Stored, base: tuple[int, int] | None) -> bool:
    """May ``ours``, made from ``base``, replace ``found``? Over ``base``, one of its
    ancestors or a version older than they reach (a replica that missed writes), or a
    corrupt record; over a deletion only if made from none. Not over any other version: a
    concurrent save (made from ``base`` or an ancestor too) got there first."""
    if found == DELETED:
        return base is None
    held = parse(found)
    if held is None or held.version == base:
        return True
    if base is None:
        return False
    return held.version[1] in ours.ancestors or held.version[0] + ANCESTORS < ours.version[0]


def made_from(held: bytes, ours: Stored) -> bool:
    """Was ``held`` made from ``ours`` (so ours is not lost)? Sure if ours is among its
    ancestors; assumed if it is newer than they reach: with every writer comparing on the
    first replica, that many saves since ours can only have been made from it."""
    newer = parse(held)
    return newer is not None and (
        ours.version[1] in newer.ancestors or newer.version[0] > ours.version[0] + ANCESTORS
    )


def older_than(value: bytes, written: tuple[int, int] | None) -> bool:
    """Is ``value``, a replica's copy, older than ``written`` (a version; None: a
    deletion), which another replica got while this one missed it? A deletion mark never
    is (what a deletion raced with loses); a version as new or newer, another app server's
    write made after, neither."""
    if value == DELETED:
        return False
    held = parse(value)
    if held is None or written is None:
        return True
    return held.version != written and held.version[0] <= written[0]


def generation(saved_at: float) -> int:
    """The generation of a record with no base, saved at ``saved_at``: its microseconds.
    Each save after it adds one, and a record without replicas (which carries only its
    save time) outranks replicated versions saved before it."""
    return int(saved_at * 1_000_000)
