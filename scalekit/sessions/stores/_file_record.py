"""The files of a FileStore shard and the shard mutex, shared by the store and its cleanup
(sessions2trash, :mod:`._file_cleanup`).

A session file starts with one ASCII line, ``SKS1 <version> <ttl or -> <length> <crc32>``,
then the payload. Beside it, ``<sid>.lock`` is a lease file of :mod:`scalekit.connect.files`
and ``<sid>.tmp-<random>`` a write in progress. Every change to a shard's files happens
while :func:`holding` its ``.mutex``.
"""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from scalekit.connect.files import TMP_INFIX, ThreadStripes

__all__ = [
    "HEADER_MAX",
    "LOCK_SUFFIX",
    "MUTEX",
    "TMP_INFIX",
    "Corrupt",
    "Header",
    "holding",
    "parse_header",
    "split",
]

MAGIC = b"SKS1"
#: A header line is well under this: magic, 16-hex token, ttl, length, crc.
HEADER_MAX = 256
#: The shard's lock file, and the suffix of a session's lock (lease) file.
MUTEX = ".mutex"
LOCK_SUFFIX = ".lock"

# flock excludes threads only on local file systems (on NFS it becomes a POSIX lock, which
# a process holds once for all its threads), so threads also take one of these first.
_thread_locks = ThreadStripes()


@contextlib.contextmanager
def holding(shard: str, fd: int) -> Iterator[None]:
    """Hold the shard's thread lock, then the flock on its open ``.mutex`` file ``fd``."""
    with _thread_locks[shard]:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Header:
    """A session file's header line: the version (a token for compare-and-set), the TTL in
    seconds, and the payload's length and CRC32."""

    version: str
    ttl: int | None
    length: int
    crc: int

    def encode(self) -> bytes:
        ttl = "-" if self.ttl is None else str(self.ttl)
        return f"SKS1 {self.version} {ttl} {self.length} {self.crc:08x}\n".encode("ascii")


class Corrupt(Exception):
    """A session or lock file that cannot be read as one; the message says why."""


def parse_header(line: bytes) -> Header:
    """The header of a session file's first line (without its newline)."""
    parts = line.split(b" ")
    if len(parts) != 5 or parts[0] != MAGIC:
        raise Corrupt("no SKS1 header")
    try:
        version = parts[1].decode("ascii")
        ttl = None if parts[2] == b"-" else int(parts[2])
        length, crc = int(parts[3]), int(parts[4], 16)
    except ValueError:
        raise Corrupt("malformed header") from None
    if not version.isalnum() or (ttl is not None and ttl <= 0) or length < 0:
        raise Corrupt("malformed header")
    return Header(version, ttl, length, crc)


def split(raw: bytes) -> tuple[Header, bytes]:
    """The header and payload of a whole session file; :class:`Corrupt` if damaged."""
    line, newline, data = raw.partition(b"\n")
    if not newline or len(line) > HEADER_MAX:
        raise Corrupt("no header line")
    header = parse_header(line)
    if len(data) != header.length:
        raise Corrupt(f"payload is {len(data)} bytes, header says {header.length}")
    if zlib.crc32(data) != header.crc:
        raise Corrupt("payload checksum mismatch")
    return header, data
