"""The file format of the disk backend: one header line, the key, then the value.

::

    SKC1 <format> <stored_at> <expires_at or -> <key length> <value length> <crc32>\n
    <key, UTF-8><value>

``format`` is ``i`` (an int, as decimal ASCII: counters), ``j`` (tagged JSON) or ``p`` (a
signed pickle, read only when the backend opts in): see :mod:`._codec`, shared by every
backend. The key is kept so ``clear(regex)`` can match it; the lengths and the CRC32 (of key
and value) tell a truncated or damaged file from a good one.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from scalekit.cache.backends._codec import Corrupt

__all__ = ["Corrupt", "Header", "build", "read_key", "split"]

MAGIC = b"SKC1"
HEADER_MAX = 200


@dataclass(frozen=True)
class Header:
    fmt: str
    stored_at: float
    expires_at: float | None
    key_length: int
    value_length: int
    crc: int

    def encode(self) -> bytes:
        expires = "-" if self.expires_at is None else repr(self.expires_at)
        return (
            f"SKC1 {self.fmt} {self.stored_at!r} {expires} {self.key_length} "
            f"{self.value_length} {self.crc:08x}\n"
        ).encode("ascii")

    def live(self, at: float) -> bool:
        return self.expires_at is None or self.expires_at > at


def parse_header(line: bytes) -> Header:
    """The header of a cache file's first line (without its newline)."""
    parts = line.split(b" ")
    if len(parts) != 7 or parts[0] != MAGIC or parts[1] not in (b"i", b"j", b"p"):
        raise Corrupt("no SKC1 header")
    try:
        expires = None if parts[3] == b"-" else float(parts[3])
        header = Header(
            parts[1].decode("ascii"),
            float(parts[2]),
            expires,
            int(parts[4]),
            int(parts[5]),
            int(parts[6], 16),
        )
    except ValueError:
        raise Corrupt("malformed header") from None
    if header.key_length <= 0 or header.value_length < 0:
        raise Corrupt("malformed header")
    return header


def split(raw: bytes) -> tuple[Header, str, bytes]:
    """Header, key and value bytes of a whole cache file; :class:`Corrupt` if damaged."""
    line, newline, rest = raw.partition(b"\n")
    if not newline or len(line) > HEADER_MAX:
        raise Corrupt("no header line")
    header = parse_header(line)
    if len(rest) != header.key_length + header.value_length:
        raise Corrupt(f"body is {len(rest)} bytes, header says more or less")
    if zlib.crc32(rest) != header.crc:
        raise Corrupt("checksum mismatch")
    try:
        key = rest[: header.key_length].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise Corrupt("the key is not UTF-8") from None
    return header, key, rest[header.key_length :]


def read_key(head: bytes) -> str:
    """The key of a cache file from its first bytes (header line plus the key)."""
    line, newline, rest = head.partition(b"\n")
    if not newline:
        raise Corrupt("no header line")
    header = parse_header(line)
    if len(rest) < header.key_length:
        raise Corrupt("truncated key")
    try:
        return rest[: header.key_length].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise Corrupt("the key is not UTF-8") from None


def encode_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def build(key: str, fmt: str, data: bytes, stored_at: float, expires_at: float | None) -> bytes:
    """A whole cache file."""
    key_bytes = encode_key(key)
    crc = zlib.crc32(data, zlib.crc32(key_bytes))
    header = Header(fmt, stored_at, expires_at, len(key_bytes), len(data), crc)
    return header.encode() + key_bytes + data
