"""Listing the keys of a memcached server, for the memcache backend's ``clear``.

Memcached has no command to list keys by prefix; ``lru_crawler metadump hash`` (memcached
1.6, LRU crawler on by default) streams one line per item, ``key=<url-encoded key> exp=...``,
then ``END``. It walks every item of the server: fine for a deploy or an admin task, not for
every request.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import unquote_to_bytes

__all__ = ["dump_keys"]


def dump_keys(server: tuple[str, int], connect_timeout: float, timeout: float) -> list[bytes]:
    """Every key on ``server``, from ``lru_crawler metadump hash`` (a walk of the hash table:
    unlike ``metadump all``, it skips no slab class whose last crawl is still winding down).

    Read on a socket of its own: pymemcache's ``raw_command`` keeps only the last chunk of a
    long reply.
    """
    deadline = time.monotonic() + 3
    with socket.create_connection(server, timeout=connect_timeout) as sock:
        sock.settimeout(timeout)
        while True:
            sock.sendall(b"lru_crawler metadump hash\r\n")
            out = _read_reply(sock)
            if out.startswith(b"NOTSTARTED"):
                return []  # nothing to crawl
            if out.endswith(b"END") and not out.startswith(b"BUSY"):
                break
            if time.monotonic() > deadline:  # "BUSY" or "ERROR": a dump still runs
                raise RuntimeError(
                    f"'lru_crawler metadump hash' kept failing ({out[:60]!r}); clearing needs "
                    "memcached 1.6 with its LRU crawler on (the default)"
                )
            time.sleep(0.01)
    return [unquote_to_bytes(line.split(b" ", 1)[0][4:]) for line in out.split(b"\n")
            if line.startswith(b"key=")]  # fmt: skip


def _read_reply(sock: socket.socket) -> bytes:
    """One reply, up to its ``\\r\\n`` (dump lines end with a bare ``\\n``)."""
    chunks: list[bytes] = []
    last = b""
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionResetError("memcached closed the connection during a key dump")
        chunks.append(data)
        if b"\r\n" in last + data:
            reply = b"".join(chunks)
            return reply[: reply.index(b"\r\n")]
        last = data[-1:]
