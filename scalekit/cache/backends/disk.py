"""DiskBackend: one file per key in sharded folders, for one server or a shared mount.

Layout under the root folder (``file:///var/cache/shop``)::

    <root>/<app>/<h[:2]>/<h>             an entry (see _diskfile for the format)
    <root>/<app>/<h[:2]>/<h>.lease       a single-flight lease: owner token and expiry
    <root>/<app>/<h[:2]>/<h>.tmp-<rand>  a write in progress (left behind only by a crash)
    <root>/<app>/<h[:2]>/.locks          per-key byte-range locks (fcntl.lockf)

``h`` is the SHA-256 of the key (40 hex digits), so no key can name a path. Writes go to a
temp file and are renamed over the old one: readers see the old or the new entry, never
half. Read-modify-write steps (``incr``, ``add``, leases) hold the key's byte of ``.locks``
(POSIX record locks also work over NFS) plus a thread lock, and never call user code while
holding it. Statistics are counted in memory by the model: no shared stats file.
A corrupt or undecodable file reads as a miss with a warning and is left in place for
inspection; the next ``set`` of its key replaces it. Atomic writes, lease files, thread
stripes and the folder's errors are :mod:`scalekit.connect.files`'s, shared with the file
session store.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from time import time
from typing import Any

from scalekit.cache.backends import _diskfile as fmt
from scalekit.cache.backends._codec import Codec
from scalekit.cache.backends.base import CacheBackend, Entry, check_key, check_ttl
from scalekit.connect.files import Folder, ThreadStripes
from scalekit.core.checks import check_lease
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import CacheUnavailable, ConfigError, InvalidArgument, InvalidArgumentType
from scalekit.core.options import as_bool, merge_options
from scalekit.core.process import after_fork
from scalekit.core.urls import BackendURL, FileURL

log = logging.getLogger("scalekit.cache")

_LOCKS = ".locks"
_LEASE = ".lease"
_NAME = re.compile(r"[0-9a-f]{40}\Z")
# POSIX record locks exclude processes, not threads of one process: threads take these too.
_thread_locks = ThreadStripes()


class DiskBackend(CacheBackend):
    """Entries as files under ``path/<app>/``; safe for threads, processes and servers
    sharing the folder. Folders are created on first write (0700, files 0600)."""

    kind = "disk"
    shared = True

    @renamed_keyword("app", "app_name")
    def __init__(
        self,
        path: str | os.PathLike[str],
        app_name: str = "app",
        *,
        serializer: str = "json",
        secret: str | bytes | Sequence[str | bytes] | None = None,
        fsync: bool = False,
    ):
        super().__init__(app_name)
        if not os.fspath(path):
            raise ConfigError("DiskBackend needs a folder, e.g. file:///var/cache/app")
        #: The root folder given (absolute, against the current directory at open time).
        self.root = os.path.abspath(os.fspath(path))
        #: This app's folder: the shards live here.
        self.folder = os.path.join(self.root, self.app_name)
        self._codec = Codec(serializer, secret, f"disk cache {self.root}")
        self.serializer = serializer
        self.fsync = bool(fsync)
        self._files = Folder(
            self.root,
            label="disk cache",
            error=CacheUnavailable,
            log=log,
            lease_label="disk cache lease",
        )
        self._fds: dict[str, int] = {}
        self._fds_lock = threading.Lock()
        after_fork(self)

    @classmethod
    @renamed_keyword("app", "app_name")
    def from_url(
        cls, settings: BackendURL, app_name: str = "app", *, secret: Any = None, **options: Any
    ) -> DiskBackend:
        """Open ``file:///var/cache/app?serializer=pickle&fsync=true``; the ``secret`` that
        signs pickles is a keyword only, never in a URL."""
        if not isinstance(settings, FileURL):
            raise ConfigError(f"{settings.masked}: a disk cache needs a file:// URL")
        merged = merge_options(settings, {"serializer": str, "fsync": as_bool}, options)
        return cls(settings.path, app_name=app_name, secret=secret, **merged)

    def __repr__(self) -> str:
        return f"<DiskBackend {self.folder}>"

    def _after_fork(self) -> None:
        # the child holds none of the parent's record locks; it opens its own handles
        self._fds, self._fds_lock = {}, threading.Lock()

    def close(self) -> None:
        with self._fds_lock:
            fds, self._fds = self._fds, {}
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- values -------------------------------------------------------------------------
    def get(self, key: str) -> Entry | None:
        _, path = self._paths(key)
        found = self._read(path)
        if found is None:
            return None
        header, _, data = found
        if not header.live(time()):
            return None
        try:
            value = self._codec.load(key, header.fmt, data)
        except fmt.Corrupt as exc:
            log.warning("disk cache file %s (key %r): %s; treated as a miss", path, key, exc)
            return None
        return Entry(value, header.stored_at)

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        _, path = self._paths(key)
        content = self._content(key, value, ttl)
        self._write(path, content)

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        shard, path = self._paths(key)
        content = self._content(key, value, ttl)
        with self._locked(shard, path):
            found = self._read(path)
            if found is not None and found[0].live(time()):
                return False
            self._write(path, content)
            return True

    def delete(self, key: str) -> bool:
        _, path = self._paths(key)
        return self._files.remove(path)

    def incr(self, key: str, delta: int = 1) -> int:
        shard, path = self._paths(key)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise InvalidArgumentType(
                f"increment of {key!r}: the delta must be an int, got {delta!r}"
            )
        with self._locked(shard, path):
            stamp = time()
            found = self._read(path)
            current, expires = 0, None
            if found is not None and found[0].live(stamp):
                header, _, data = found
                if header.fmt != "i":
                    raise InvalidArgument(f"cannot increment cache key {key!r}: it holds no int")
                current, expires = int(data), header.expires_at
            value = current + delta
            content = fmt.build(key, "i", str(value).encode("ascii"), stamp, expires)
            self._write(path, content)
            return value

    def clear(self, pattern: re.Pattern[str] | None = None) -> int:
        removed = 0
        for path in self._entry_paths():
            if pattern is not None:
                try:
                    with open(path, "rb") as file:
                        head = file.read(fmt.HEADER_MAX + 4096)
                    key = fmt.read_key(head)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise self._files.unavailable("read", exc) from exc
                except fmt.Corrupt:
                    continue  # cannot tell its key: leave it (a later set replaces it)
                if not pattern.match(key):
                    continue
            removed += self._files.remove(path)
        return removed

    # -- leases -------------------------------------------------------------------------
    def try_lease(self, key: str, token: str, ttl: float) -> bool:
        ttl = check_lease(token, ttl)
        shard, path = self._paths(key)
        with self._locked(shard, path):
            return self._files.take_lease(
                path + _LEASE, token, ttl, sync=self.fsync, make_folder=True
            )

    def release_lease(self, key: str, token: str) -> bool:
        shard, path = self._paths(key)
        with self._locked(shard, path):
            return self._files.release_lease(path + _LEASE, token)

    def server_stats(self) -> dict[str, Any]:
        """Entries and bytes on disk (walks the folder: call it rarely)."""
        entries = size = 0
        for path in self._entry_paths():
            with contextlib.suppress(OSError):
                size += os.stat(path).st_size
                entries += 1
        return {"folder": self.folder, "entries": entries, "bytes": size}

    # -- files --------------------------------------------------------------------------
    def _paths(self, key: str) -> tuple[str, str]:
        """The shard folder and file of ``key``."""
        check_key(key)
        name = hashlib.sha256(fmt.encode_key(key)).hexdigest()[:40]
        shard = os.path.join(self.folder, name[:2])
        return shard, os.path.join(shard, name)

    def _content(self, key: str, value: Any, ttl: float | None) -> bytes:
        ttl = check_ttl(ttl)
        kind, data = self._codec.dump(key, value)
        stamp = time()
        return fmt.build(key, kind, data, stamp, None if ttl is None else stamp + ttl)

    def _entry_paths(self) -> Iterator[str]:
        try:
            shards = os.listdir(self.folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._files.unavailable("list", exc) from exc
        for shard in shards:
            shard_path = os.path.join(self.folder, shard)
            try:
                names = os.listdir(shard_path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise self._files.unavailable("list", exc) from exc
            for name in names:
                if _NAME.match(name):
                    yield os.path.join(shard_path, name)

    def _lock_fd(self, shard: str) -> int:
        fd = self._fds.get(shard)
        if fd is not None:
            return fd
        with self._fds_lock:
            fd = self._fds.get(shard)
            if fd is None:
                try:
                    os.makedirs(shard, mode=0o700, exist_ok=True)
                    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                    fd = os.open(os.path.join(shard, _LOCKS), flags, 0o600)
                except OSError as exc:
                    raise self._files.unavailable("create", exc) from exc
                self._fds[shard] = fd
            return fd

    @contextlib.contextmanager
    def _locked(self, shard: str, path: str) -> Iterator[None]:
        """Hold the key's lock: a thread lock, then one byte of the shard's ``.locks`` file.

        The descriptor stays open for the life of the process: closing any descriptor of a
        file drops all of the process's record locks on it.
        """
        offset = int(path[-40:][2:9], 16)
        with _thread_locks[offset]:
            fd = self._lock_fd(shard)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
            except OSError as exc:
                raise self._files.unavailable("lock", exc) from exc
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

    def _read(self, path: str) -> tuple[fmt.Header, str, bytes] | None:
        """Header, key and value bytes of the file at ``path``; ``None`` if it is missing
        or corrupt (logged, left in place)."""
        try:
            with open(path, "rb") as file:
                raw = file.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._files.unavailable("read", exc) from exc
        try:
            return fmt.split(raw)
        except fmt.Corrupt as exc:
            log.warning("corrupt disk cache file %s (%s): treated as a miss, left in place",
                        path, exc)  # fmt: skip
            return None

    def _write(self, path: str, content: bytes) -> None:
        """Replace ``path`` atomically: write ``<path>.tmp-<random>``, then ``os.replace``."""
        self._files.write(path, content, sync=self.fsync, make_folder=True)
