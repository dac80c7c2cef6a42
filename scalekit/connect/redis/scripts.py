"""Lua scripts that declare their keys, and the one lease primitive's release script.

A :class:`Script` is made once, at module level, with its source and how many keys it
touches; running it (:meth:`~.RedisConnector.run`) checks that the caller passes exactly that
many, and every key a script reads or writes must be among them. That is Redis's rule for
scripts on a Cluster (the keys route the call), kept now so a Cluster topology needs no
change in the pieces. Scripts run by ``EVALSHA``, loaded when the server answers NOSCRIPT.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from scalekit.core.errors import InvalidArgumentType

__all__ = ["RELEASE_LEASE", "Script"]


class Script:
    """A Lua script's ``source``, the number of ``keys`` it touches, and its SHA1."""

    __slots__ = ("keys", "sha1", "source")

    def __init__(self, source: str, keys: int):
        self.source, self.keys = source, keys
        self.sha1 = hashlib.sha1(source.encode()).hexdigest()

    def evalsha(self, keys: Sequence[Any], args: Sequence[Any]) -> tuple:
        """The ``EVALSHA`` command running this script on ``keys`` (exactly those declared)."""
        if len(keys) != self.keys:
            raise InvalidArgumentType(f"this script declares {self.keys} keys, {len(keys)} given")
        return ("EVALSHA", self.sha1, self.keys, *keys, *args)

    def __repr__(self) -> str:
        return f"<Script {self.sha1[:8]} keys={self.keys}>"


#: A lease's release: delete KEYS[1] only if it still holds the owner's token ARGV[1].
RELEASE_LEASE = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""",
    keys=1,
)
