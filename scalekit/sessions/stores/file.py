"""FileStore: one file per session in sharded folders, for one server or a shared mount.

Layout under the root folder (``file:///var/app/sessions``)::

    <root>/<app>/<sid[:2]>/<sid>             the session: a header line, then the payload
    <root>/<app>/<sid[:2]>/<sid>.lock        a session lock (token and expiry), see try_lease
    <root>/<app>/<sid[:2]>/<sid>.tmp-<rand>  a write in progress (left behind only by a crash)
    <root>/<app>/<sid[:2]>/.mutex            the shard's fcntl lock for compare-and-set

The header is one ASCII line, ``SKS1 <version> <ttl or -> <length> <crc32>``: the version
token for compare-and-set, the TTL in seconds, and a length and checksum that tell a
truncated or damaged file from a good one. A record expires ``ttl`` seconds after the file's
modification time, so ``touch`` is an ``os.utime`` and the cleanup script (sessions2trash)
can expire files from the folder alone.

Every change to a shard's files (save, touch, delete, lock, and cleanup's unlinks) happens
under that shard's mutex; only ``load`` reads without it. The file format and the mutex are
:mod:`._file_record`'s (shared with the cleanup, :mod:`._file_cleanup`); atomic writes, the
lock (lease) files and the errors of the folder are :mod:`scalekit.connect.files`'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from scalekit.connect.files import Folder, existing_folder
from scalekit.core.checks import check_lease
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError, InvalidArgument, StoreUnavailable
from scalekit.core.options import as_bool, merge_options
from scalekit.core.urls import BackendURL, FileURL
from scalekit.sessions.stores._file_record import (
    HEADER_MAX,
    LOCK_SUFFIX,
    MUTEX,
    TMP_INFIX,
    Corrupt,
    Header,
    holding,
    parse_header,
    split,
)
from scalekit.sessions.stores.base import (
    ANY,
    CleanupStats,
    Progress,
    Record,
    SessionStore,
    check_payload,
    check_session_id,
    now,
    ttl_seconds,
)

log = logging.getLogger("scalekit.sessions")


@dataclass(frozen=True)
class _Entry:
    """A session file as read: its header, its payload (if read) and its mtime."""

    header: Header
    data: bytes
    mtime: float

    def expired(self, at: float) -> bool:
        return self.header.ttl is not None and self.mtime + self.header.ttl <= at


class FileStore(SessionStore):
    """Sessions as files under ``path/<app>/``; safe for threads, processes and servers
    sharing the folder (NFS included, where ``flock`` is emulated with POSIX locks).

    Writes go to a temp file in the same folder, are flushed to disk (``fsync=False`` skips
    that for speed on throwaway folders) and renamed over the old file, so a reader sees the
    old or the new record, never half of one. Compare-and-set runs under a per-shard
    ``fcntl.flock``. Folders are created on first write (shards 0700, files 0600).
    ``create=False`` opens the folders of an app that has sessions only: a missing root
    or app folder is :class:`~scalekit.core.errors.StoreNotFound`.
    """

    kind = "file"

    @renamed_keyword("app", "app_name")
    def __init__(
        self,
        path: str | os.PathLike[str],
        app_name: str = "app",
        *,
        fsync: bool = True,
        create: bool = True,
    ):
        super().__init__(app_name)
        if not os.fspath(path):
            raise ConfigError("FileStore needs a folder, e.g. file:///var/app/sessions")
        #: The root folder given (made absolute against the current directory).
        self.root = os.path.abspath(os.fspath(path))
        #: This app's folder: the shards live here.
        self.folder = os.path.join(self.root, self.app_name)
        self.fsync = bool(fsync)
        if not create:
            existing_folder(self.root, "session folder")
            existing_folder(self.folder, f"session folder of app {self.app_name}")
        self._files = Folder(
            self.root,
            label="session folder",
            error=StoreUnavailable,
            log=log,
            lease_label="session lock file",
        )

    @classmethod
    @renamed_keyword("app", "app_name")
    def from_url(
        cls, settings: BackendURL, app_name: str = "app", *, create: bool = True, **options: Any
    ) -> FileStore:
        """Open ``file:///path?fsync=false``; a relative path is relative to the cwd."""
        if not isinstance(settings, FileURL):
            raise ConfigError(f"{settings.masked}: a FileStore needs a file:// URL")
        merged = merge_options(settings, {"fsync": as_bool}, options)
        return cls(settings.path, app_name=app_name, create=create, **merged)

    def __repr__(self) -> str:
        return f"<FileStore {self.folder}>"

    # -- the protocol -------------------------------------------------------------------
    def load(self, sid: str) -> Record | None:
        _, path = self._paths(sid)
        entry = self._read(path, whole=True)
        if entry is None or entry.expired(now()):
            return None
        return Record(entry.data, entry.header.version, entry.mtime)

    def save(self, sid: str, data: bytes, ttl: int | None, expected: Any) -> bool:
        shard, path = self._paths(sid)
        ttl, data = ttl_seconds(ttl), check_payload(data)
        with self._mutex(shard, create=True):
            current = self._read(path, whole=expected is not ANY)
            live = current is not None and not current.expired(now())
            if expected is None:
                allowed = not live
            elif expected is ANY:
                allowed = True
            else:
                allowed = live and current is not None and current.header.version == expected
            if not allowed:
                return False
            header = Header(secrets.token_hex(8), ttl, len(data), zlib.crc32(data))
            self._files.write(path, header.encode() + data, sync=self.fsync)
            return True

    def touch(self, sid: str, ttl: int | None) -> None:
        """Refresh the file time (or, for a new TTL, rewrite the header) under the shard
        mutex, so that a cleanup that found the session expired cannot delete it after."""
        shard, path = self._paths(sid)
        ttl = ttl_seconds(ttl)
        with self._mutex(shard, create=False) as held:
            entry = self._read(path, whole=False) if held else None
            if entry is None or entry.expired(now()):
                return
            if entry.header.ttl == ttl:  # the usual case: same TTL, only the time moves
                try:
                    os.utime(path)
                except FileNotFoundError:
                    pass  # deleted meanwhile: nothing to touch
                except OSError as exc:
                    raise self._files.unavailable("touch", exc) from exc
                return
            entry = self._read(path, whole=True)
            if entry is not None and not entry.expired(now()):
                header = Header(entry.header.version, ttl, len(entry.data), entry.header.crc)
                self._files.write(path, header.encode() + entry.data, sync=self.fsync)

    def delete(self, sid: str) -> None:
        shard, path = self._paths(sid)
        with self._mutex(shard, create=False) as held:
            if held:
                self._files.remove(path)

    def try_lease(self, sid: str, token: str, ttl: float) -> bool:
        """Take ``<sid>.lock`` if it is absent or expired (under the shard mutex)."""
        shard, path = self._paths(sid)
        ttl = check_lease(token, ttl)
        with self._mutex(shard, create=True):
            # written as <sid>.tmp-<random>, the session file's temp name, which cleanup knows
            return self._files.take_lease(
                path + LOCK_SUFFIX, token, ttl, tmp_prefix=path + TMP_INFIX, sync=False
            )

    def release_lease(self, sid: str, token: str) -> None:
        shard, path = self._paths(sid)
        with self._mutex(shard, create=False) as held:
            if held:
                self._files.release_lease(path + LOCK_SUFFIX, token)

    def cleanup(
        self,
        cutoff: float,
        *,
        force: bool = False,
        dry_run: bool = False,
        batch: int = 1000,
        progress: Progress | None = None,
    ) -> CleanupStats:
        """Walk this app's shards and delete expired session files, expired lock files and
        temp files older than 10 minutes; ``examined`` counts session files.

        Each file is first judged without the mutex, from its time and header line; the
        candidates of a shard are then checked again and unlinked under the shard mutex
        (which save, touch, delete and lock take too), by a few threads at once. Progress
        is reported each time another ``batch`` session files have been examined (a shard
        is examined whole). No symbolic link is followed, and files that vanish meanwhile
        are skipped. Live locks stay, also with ``force``. An app folder that is a
        symbolic link is refused (:class:`ConfigError`). See ``_file_cleanup``.
        """
        from scalekit.sessions.stores._file_cleanup import Sweep  # only cleanup needs its threads

        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidArgument(f"batch={batch!r} must be a whole number of 1 or more")
        sweep = Sweep(self.folder, self._files, cutoff, force, dry_run, batch, progress)
        sweep.run()
        return sweep.stats

    # -- files --------------------------------------------------------------------------
    def _paths(self, sid: str) -> tuple[str, str]:
        """The shard folder and file of a (validated) session id."""
        check_session_id(sid)
        shard = os.path.join(self.folder, sid[:2])
        return shard, os.path.join(shard, sid)

    @contextlib.contextmanager
    def _mutex(self, shard: str, create: bool) -> Iterator[bool]:
        """Hold the shard's flock; yields False (holding nothing) if the shard does not
        exist and ``create`` is false, i.e. there is nothing to change."""
        try:
            if create:
                os.makedirs(shard, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(shard, MUTEX), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError as exc:
            if create:
                raise self._files.unavailable("create", exc) from exc
            yield False
            return
        except OSError as exc:
            raise self._files.unavailable("create" if create else "open", exc) from exc
        try:
            with holding(shard, fd):
                yield True
        finally:
            os.close(fd)  # closing releases the flock

    def _read(self, path: str, whole: bool) -> _Entry | None:
        """The session file at ``path`` (just its header unless ``whole``), or ``None`` when
        it is missing or corrupt (a corrupt file is logged and left for inspection)."""
        try:
            with open(path, "rb") as file:
                mtime = os.fstat(file.fileno()).st_mtime
                raw = file.read() if whole else file.readline(HEADER_MAX + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._files.unavailable("read", exc) from exc
        try:
            if whole:
                header, data = split(raw)
            else:
                if not raw.endswith(b"\n"):
                    raise Corrupt("no header line")
                header, data = parse_header(raw[:-1]), b""
        except Corrupt as exc:
            log.warning(
                "corrupt session file %s (%s): treated as missing, left in place", path, exc
            )
            return None
        return _Entry(header, data, mtime)
