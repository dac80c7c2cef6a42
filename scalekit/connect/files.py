"""Atomic file replacement, shared by every piece that keeps files (sessions, cache, tickets,
maintenance flags): a reader sees the old content or the new, never part of either."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Hashable

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def replace_atomically(
    path: str,
    content: bytes,
    *,
    tmp_prefix: str | None = None,
    mode: int = 0o600,
    sync: bool = True,
    make_folder: bool = False,
) -> None:
    """Write ``content`` to ``<tmp_prefix><random>`` (default ``<path>.tmp-``), fsync it
    if ``sync``, then ``os.replace`` it onto ``path``. On any failure the temp file is
    removed and the ``OSError`` raised; ``make_folder`` creates a missing folder first."""
    tmp = (tmp_prefix or f"{path}.tmp-") + secrets.token_hex(6)
    try:
        fd = os.open(tmp, _CREATE, mode)
    except FileNotFoundError:
        if not make_folder:
            raise
        os.makedirs(os.path.dirname(tmp), mode=0o700, exist_ok=True)
        fd = os.open(tmp, _CREATE, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            if sync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def describe_os_error(exc: OSError) -> str:
    """What an ``OSError`` on a path means, naming the file that is in the way if any."""
    path = exc.filename
    if isinstance(exc, (NotADirectoryError, FileExistsError)) and path:
        parts = os.path.abspath(os.fspath(path)).split(os.sep)
        for end in range(2, len(parts) + 1):
            prefix = os.sep.join(parts[:end])
            if os.path.lexists(prefix) and not os.path.isdir(prefix):
                return f"{prefix} is a file, not a folder"
    return f"{path}: {exc.strerror or exc}" if path else str(exc)


class ThreadStripes:
    """Thread locks striped by key, taken with a file lock that excludes processes but
    not the threads of one process (POSIX record locks; flock on NFS). A forked child
    starts with free ones: a parent's thread may have held one."""

    def __init__(self, count: int = 64):
        self._count = count
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._locks = [threading.Lock() for _ in range(self._count)]

    def __getitem__(self, key: Hashable) -> threading.Lock:
        return self._locks[hash(key) % self._count]


def lease_bytes(token: str, expires: float) -> bytes:
    """A lease (lock) file's content: its holder's token and the Unix time it ends."""
    return f"{token}\n{expires!r}\n".encode()


def parse_lease(raw: bytes) -> tuple[str, float]:
    """The (token, end) in a lease file's bytes; ``ValueError`` if they are damaged."""
    token, expires = raw.decode("utf-8").split("\n")[:2]
    return token, float(expires)
