"""Key namespaces: every piece names its keys ``scalekit:<piece>:<app>:...``.

``s`` for sessions, ``c`` for the cache, ``m`` for the maintenance flag. With a hash tag
(a Cluster topology asks for one) the app is wrapped in braces, ``scalekit:s:{shop}:...``:
Redis Cluster hashes only the tag, so every key of one app's piece lands in one slot and a
script may touch several. Without one (a standalone server) the keys are those stored so
far, byte for byte. A piece whose commands each touch one key (the cache, the maintenance
flag) asks for ``spread``: no tag, its keys spread over the primaries.
"""

from __future__ import annotations

__all__ = ["Namespace"]


class Namespace:
    """The keys of one ``piece`` for one app: :attr:`name` itself (a piece with one key)
    and :attr:`prefix`, ``name + ":"``, that the piece's keys start with."""

    __slots__ = ("name", "prefix")

    def __init__(self, piece: str, app_name: str, *, hash_tag: bool = False):
        name = f"{{{app_name}}}" if hash_tag else app_name
        self.name = f"scalekit:{piece}:{name}"
        self.prefix = self.name + ":"

    def __repr__(self) -> str:
        return f"<Namespace {self.prefix}>"
