"""``Accept-Encoding``: which content coding a client takes, for every piece that sends one
(static files' precompressed variants, the front end's compression), and the gzip framing
both write around a raw deflate stream.

Lenient the way RFC 9110 asks: a malformed item is ignored (as if absent), never an error
for the client.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

__all__ = ["choose_encoding", "gzip_header", "gzip_trailer", "parse_accept_encoding"]

_CODING = re.compile(
    r"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:;\s*q\s*=\s*([0-9.]+)\s*)?$", re.IGNORECASE
)
_ALIASES = {"x-gzip": "gzip"}


def parse_accept_encoding(header: str) -> dict[str, float]:
    """Each coding named in ``header`` (lower case) with its q-value; malformed items and
    q-values outside 0..1 are left out."""
    codings: dict[str, float] = {}
    for item in header.split(","):
        match = _CODING.match(item)
        if match is None:
            continue
        coding = match.group(1).lower()
        try:
            q = float(match.group(2)) if match.group(2) is not None else 1.0
        except ValueError:
            continue
        if 0.0 <= q <= 1.0:
            codings[_ALIASES.get(coding, coding)] = q
    return codings


def choose_encoding(header: str | None, available: Sequence[str]) -> str | None:
    """The coding to send among ``available`` (most preferred first), or ``None`` for
    identity. The highest q-value wins, ties go to the earlier coding; ``*`` sets the q of
    codings not named; identity wins only when named with a higher q than the others.
    Without the header only identity is sent (old clients); when identity is refused and
    nothing else fits, identity is sent anyway (RFC 9110 allows it, and it is never wrong
    bytes)."""
    if not header or not available:
        return None
    accepted = parse_accept_encoding(header)
    star = accepted.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in available:
        q = accepted.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    if best is not None and accepted.get("identity", 0.0) > best_q:
        return None
    return best


#: gzip's XFL byte as the gzip module writes it: 2 for the best compression, 4 for the fastest.
_XFL = {9: 2, 1: 4}
_OS_UNIX = 3


def gzip_header(level: int, name_length: int = 0) -> bytes:
    """A gzip member header (RFC 1952) with mtime 0 ("no time stamp": the same bytes on every
    server); with ``name_length``, a file name of that many bytes, which decoders skip (the
    front end's BREACH padding)."""
    flags = 0x08 if name_length else 0
    head = bytes([0x1F, 0x8B, 8, flags, 0, 0, 0, 0, _XFL.get(level, 0), _OS_UNIX])
    return head + b"a" * name_length + b"\x00" if name_length else head


def gzip_trailer(crc: int, size: int) -> bytes:
    """A gzip member's end: the CRC-32 and the length (mod 2**32) of the uncompressed data."""
    return struct.pack("<II", crc, size & 0xFFFFFFFF)
