"""The files connector: how every piece that keeps files (sessions, cache, tickets,
maintenance flags) writes them, leases them and locks them.

* :func:`replace_atomically`: write ``<path>.tmp-<random>`` (:data:`TMP_INFIX`), fsync it,
  ``os.replace`` it onto ``path``: a reader sees the old content or the new, never part of
  either. The content is bytes or a stream of chunks (an upload, never whole in memory).
  A temp file older than :data:`STALE_TEMP` is what a crashed write left behind.
* :class:`Folder`: a piece's folder, where every ``OSError`` becomes the piece's
  :class:`~scalekit.core.errors.StoreUnavailable` naming the folder, the action and the fix;
  it writes, removes, and keeps lease files.
* Lease (lock) files: ``<token>\\n<end as a Unix time>\\n``. :meth:`Folder.take_lease` writes
  one if none is there or the one there has ended; :meth:`Folder.release_lease` removes it
  only for its own token. The caller holds its file lock (a shard's ``flock``, a key's byte
  of ``lockf``) around both, so no one else reads the lease between the check and the write.
* :func:`existing_folder`: a folder to read or clean up, which must exist: nothing is
  created, a missing one is :class:`~scalekit.core.errors.StoreNotFound` naming it.
* :class:`ThreadStripes`: thread locks striped by key, taken beside such a file lock, which
  excludes processes but not the threads of one process; a forked child gets fresh ones
  (:func:`~scalekit.core.process.after_fork`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Hashable, Iterable

from scalekit.core.errors import NotAFolder, StoreNotFound, StoreUnavailable
from scalekit.core.process import after_fork

__all__ = [
    "LEASE_MAX",
    "STALE_TEMP",
    "TMP_INFIX",
    "Folder",
    "ThreadStripes",
    "describe_os_error",
    "existing_folder",
    "lease_bytes",
    "parse_lease",
    "remove_file",
    "replace_atomically",
]

#: What a temp file's name holds between the target's name and its random part.
TMP_INFIX = ".tmp-"
#: A temp file this old is what a crashed write left behind (a write takes milliseconds).
STALE_TEMP = 600.0
#: The most bytes of a lease file read: a 128-character token and its end fit well within.
LEASE_MAX = 1024

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def replace_atomically(
    path: str,
    content: bytes | Iterable[bytes],
    *,
    tmp_prefix: str | None = None,
    mode: int = 0o600,
    sync: bool = True,
    make_folder: bool = False,
    dir_fd: int | None = None,
) -> None:
    """Write ``content`` (bytes, or chunks written as they come) to ``<tmp_prefix><random>``
    (default ``<path>.tmp-``), fsync it if ``sync``, then ``os.replace`` it onto ``path``.
    On any failure, also one raised by the chunks, the temp file is removed and the error
    raised; ``make_folder`` creates a missing folder first. With ``dir_fd`` (an open folder)
    both names are relative to it, and ``sync`` fsyncs the folder too, so that the rename
    itself survives a crash."""
    tmp = (tmp_prefix or path + TMP_INFIX) + secrets.token_hex(6)
    try:
        fd = os.open(tmp, _CREATE, mode, dir_fd=dir_fd)
    except FileNotFoundError:
        if not make_folder or dir_fd is not None:
            raise
        os.makedirs(os.path.dirname(tmp), mode=0o700, exist_ok=True)
        fd = os.open(tmp, _CREATE, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            for chunk in (content,) if isinstance(content, bytes) else content:
                file.write(chunk)
            if sync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    if sync and dir_fd is not None:
        os.fsync(dir_fd)


def remove_file(path: str) -> bool:
    """Unlink ``path``; false if it was already gone (any other ``OSError`` is raised)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


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


def existing_folder(path: str | os.PathLike[str], label: str) -> str:
    """``path`` made absolute, if it is a folder; creates nothing. Raises
    :class:`StoreNotFound` ("<label> <path> does not exist") if nothing is there,
    :class:`NotAFolder` if a file is, :class:`StoreUnavailable` if it cannot be looked at."""
    path = os.path.abspath(os.fspath(path))
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise StoreNotFound(f"{label} {path} does not exist") from None
    except OSError as exc:
        raise StoreUnavailable(f"{label} {path}: cannot open: {describe_os_error(exc)}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise NotAFolder(f"{label} {path} is not a folder")
    return path


def lease_bytes(token: str, expires: float) -> bytes:
    """A lease (lock) file's content: its holder's token and the Unix time it ends."""
    return f"{token}\n{expires!r}\n".encode()


def parse_lease(raw: bytes) -> tuple[str, float]:
    """The (token, end) in a lease file's bytes; ``ValueError`` if they are damaged."""
    token, expires = raw.decode("utf-8").split("\n")[:2]
    return token, float(expires)


class Folder:
    """A piece's folder under ``root``: writes, removals and lease files, each ``OSError``
    raised as ``error`` ("<label> <root>: cannot <action>: <why>; make <root> a folder that
    user <uid> can write"). A damaged lease file is logged to ``log`` as a corrupt
    ``lease_label`` and counts as ended."""

    def __init__(
        self,
        root: str,
        *,
        label: str,
        error: type[StoreUnavailable],
        log: logging.Logger,
        lease_label: str = "lease file",
    ):
        self.root, self.label, self.error = root, label, error
        self.log, self.lease_label = log, lease_label

    def unavailable(self, action: str, exc: OSError) -> StoreUnavailable:
        """The error for ``exc``, raised while trying to ``action``."""
        return self.error(
            f"{self.label} {self.root}: cannot {action}: {describe_os_error(exc)}; "
            f"make {self.root} a folder that user {os.getuid()} can write"
        )

    def write(
        self,
        path: str,
        content: bytes,
        *,
        tmp_prefix: str | None = None,
        sync: bool,
        make_folder: bool = False,
    ) -> None:
        """:func:`replace_atomically`, failing as ``error``."""
        try:
            replace_atomically(
                path, content, tmp_prefix=tmp_prefix, sync=sync, make_folder=make_folder
            )
        except OSError as exc:
            raise self.unavailable("write", exc) from exc

    def remove(self, path: str) -> bool:
        """:func:`remove_file`, failing as ``error``."""
        try:
            return remove_file(path)
        except OSError as exc:
            raise self.unavailable("remove", exc) from exc

    def read_lease(self, path: str) -> tuple[str, float] | None:
        """The (token, end) of the lease file at ``path``; ``None`` if there is none or it
        is damaged (logged: it counts as ended)."""
        try:
            with open(path, "rb") as file:
                raw = file.read(LEASE_MAX)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self.unavailable("read", exc) from exc
        try:
            return parse_lease(raw)
        except ValueError:
            self.log.warning("corrupt %s %s: treated as expired", self.lease_label, path)
            return None

    def take_lease(
        self,
        path: str,
        token: str,
        ttl: float,
        *,
        tmp_prefix: str | None = None,
        sync: bool,
        make_folder: bool = False,
    ) -> bool:
        """Write the lease file ``path`` for ``token`` and ``ttl`` seconds unless one that
        has not ended is there; true if taken. Call it holding the caller's file lock."""
        holder = self.read_lease(path)
        if holder is not None and holder[1] > time.time():
            return False
        content = lease_bytes(token, time.time() + ttl)
        self.write(path, content, tmp_prefix=tmp_prefix, sync=sync, make_folder=make_folder)
        return True

    def release_lease(self, path: str, token: str) -> bool:
        """Remove the lease file ``path`` if ``token`` holds it; true if removed. Call it
        holding the caller's file lock."""
        holder = self.read_lease(path)
        return holder is not None and holder[0] == token and self.remove(path)


class ThreadStripes:
    """Thread locks striped by key, taken with a file lock that excludes processes but
    not the threads of one process (POSIX record locks; flock on NFS). A forked child
    starts with free ones: a parent's thread may have held one."""

    def __init__(self, count: int = 64):
        self._count = count
        self._after_fork()
        after_fork(self)

    def _after_fork(self) -> None:
        self._locks = [threading.Lock() for _ in range(self._count)]

    def __getitem__(self, key: Hashable) -> threading.Lock:
        return self._locks[hash(key) % self._count]
