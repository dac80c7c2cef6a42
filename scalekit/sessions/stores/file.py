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
under that shard's mutex; only ``load`` reads without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from scalekit.connect.files import (
    ThreadStripes,
    describe_os_error,
    lease_bytes,
    parse_lease,
    replace_atomically,
)
from scalekit.core.checks import check_lease
from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.core.options import as_bool, merge_options
from scalekit.core.urls import BackendURL, FileURL
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

_MAGIC = b"SKS1"
_HEADER_MAX = 256  # a header line is well under this: magic, 16-hex token, ttl, length, crc
_MUTEX = ".mutex"
_LOCK_SUFFIX = ".lock"
_TMP_INFIX = ".tmp-"
# flock excludes threads only on local file systems (on NFS it becomes a POSIX lock, which
# a process holds once for all its threads), so threads also take one of these first.
_thread_locks = ThreadStripes()


@contextlib.contextmanager
def _holding(shard: str, fd: int) -> Iterator[None]:
    """Hold the shard's thread lock, then the flock on its open ``.mutex`` file ``fd``."""
    with _thread_locks[shard]:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class _Header:
    version: str
    ttl: int | None
    length: int
    crc: int

    def encode(self) -> bytes:
        ttl = "-" if self.ttl is None else str(self.ttl)
        return f"SKS1 {self.version} {ttl} {self.length} {self.crc:08x}\n".encode("ascii")


class _Corrupt(Exception):
    """A session or lock file that cannot be read as one; the message says why."""


def _parse_header(line: bytes) -> _Header:
    parts = line.split(b" ")
    if len(parts) != 5 or parts[0] != _MAGIC:
        raise _Corrupt("no SKS1 header")
    try:
        version = parts[1].decode("ascii")
        ttl = None if parts[2] == b"-" else int(parts[2])
        length, crc = int(parts[3]), int(parts[4], 16)
    except ValueError:
        raise _Corrupt("malformed header") from None
    if not version.isalnum() or (ttl is not None and ttl <= 0) or length < 0:
        raise _Corrupt("malformed header")
    return _Header(version, ttl, length, crc)


def _split(raw: bytes) -> tuple[_Header, bytes]:
    """The header and payload of a whole session file; :class:`_Corrupt` if damaged."""
    line, newline, data = raw.partition(b"\n")
    if not newline or len(line) > _HEADER_MAX:
        raise _Corrupt("no header line")
    header = _parse_header(line)
    if len(data) != header.length:
        raise _Corrupt(f"payload is {len(data)} bytes, header says {header.length}")
    if zlib.crc32(data) != header.crc:
        raise _Corrupt("payload checksum mismatch")
    return header, data


@dataclass(frozen=True)
class _Entry:
    """A session file as read: its header, its payload (if read) and its mtime."""

    header: _Header
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
    """

    kind = "file"

    def __init__(self, path: str | os.PathLike[str], app: str = "app", *, fsync: bool = True):
        super().__init__(app)
        if not os.fspath(path):
            raise ConfigError("FileStore needs a folder, e.g. file:///var/app/sessions")
        #: The root folder given (made absolute against the current directory).
        self.root = os.path.abspath(os.fspath(path))
        #: This app's folder: the shards live here.
        self.folder = os.path.join(self.root, self.app)
        self.fsync = bool(fsync)

    @classmethod
    def from_url(cls, settings: BackendURL, app: str = "app", **options: Any) -> FileStore:
        """Open ``file:///path?fsync=false``; a relative path is relative to the cwd."""
        if not isinstance(settings, FileURL):
            raise ConfigError(f"{settings.masked}: a FileStore needs a file:// URL")
        merged = merge_options(settings, {"fsync": as_bool}, options)
        return cls(settings.path, app=app, **merged)

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
            header = _Header(secrets.token_hex(8), ttl, len(data), zlib.crc32(data))
            self._write(shard, sid, path, header.encode() + data, sync=self.fsync)
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
                    raise self._unavailable("touch", exc) from exc
                return
            entry = self._read(path, whole=True)
            if entry is not None and not entry.expired(now()):
                header = _Header(entry.header.version, ttl, len(entry.data), entry.header.crc)
                self._write(shard, sid, path, header.encode() + entry.data, sync=self.fsync)

    def delete(self, sid: str) -> None:
        shard, path = self._paths(sid)
        with self._mutex(shard, create=False) as held:
            if held:
                self._unlink(path)

    def try_lease(self, sid: str, token: str, ttl: float) -> bool:
        """Take ``<sid>.lock`` if it is absent or expired (under the shard mutex)."""
        shard, path = self._paths(sid)
        ttl = check_lease(token, ttl)
        lock_path = path + _LOCK_SUFFIX
        with self._mutex(shard, create=True):
            holder = self._read_lock(lock_path)
            if holder is not None and holder[1] > now():
                return False
            self._write(shard, sid, lock_path, lease_bytes(token, now() + ttl), sync=False)
            return True

    def release_lease(self, sid: str, token: str) -> None:
        shard, path = self._paths(sid)
        lock_path = path + _LOCK_SUFFIX
        with self._mutex(shard, create=False) as held:
            holder = self._read_lock(lock_path) if held else None
            if holder is not None and holder[0] == token:
                self._unlink(lock_path)

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
        from scalekit.sessions.stores._file_cleanup import Sweep  # it uses this module

        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch={batch!r} must be a whole number of 1 or more")
        sweep = Sweep(self, cutoff, force, dry_run, batch, progress)
        sweep.run()
        return sweep.stats

    # -- files --------------------------------------------------------------------------
    def _paths(self, sid: str) -> tuple[str, str]:
        """The shard folder and file of a (validated) session id."""
        check_session_id(sid)
        shard = os.path.join(self.folder, sid[:2])
        return shard, os.path.join(shard, sid)

    def _unavailable(self, action: str, exc: OSError) -> StoreUnavailable:
        return StoreUnavailable(
            f"session folder {self.root}: cannot {action}: {describe_os_error(exc)}; "
            f"make {self.root} a folder that user {os.getuid()} can write"
        )

    @contextlib.contextmanager
    def _mutex(self, shard: str, create: bool) -> Iterator[bool]:
        """Hold the shard's flock; yields False (holding nothing) if the shard does not
        exist and ``create`` is false, i.e. there is nothing to change."""
        try:
            if create:
                os.makedirs(shard, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(shard, _MUTEX), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError as exc:
            if create:
                raise self._unavailable("create", exc) from exc
            yield False
            return
        except OSError as exc:
            raise self._unavailable("create" if create else "open", exc) from exc
        try:
            with _holding(shard, fd):
                yield True
        finally:
            os.close(fd)  # closing releases the flock

    def _read(self, path: str, whole: bool) -> _Entry | None:
        """The session file at ``path`` (just its header unless ``whole``), or ``None`` when
        it is missing or corrupt (a corrupt file is logged and left for inspection)."""
        try:
            with open(path, "rb") as file:
                mtime = os.fstat(file.fileno()).st_mtime
                raw = file.read() if whole else file.readline(_HEADER_MAX + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unavailable("read", exc) from exc
        try:
            if whole:
                header, data = _split(raw)
            else:
                if not raw.endswith(b"\n"):
                    raise _Corrupt("no header line")
                header, data = _parse_header(raw[:-1]), b""
        except _Corrupt as exc:
            log.warning(
                "corrupt session file %s (%s): treated as missing, left in place", path, exc
            )
            return None
        return _Entry(header, data, mtime)

    def _read_lock(self, path: str) -> tuple[str, float] | None:
        """The (token, expiry) in a lock file, or ``None``; a damaged one counts as expired."""
        try:
            with open(path, "rb") as file:
                raw = file.read(1024)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unavailable("read", exc) from exc
        try:
            return parse_lease(raw)
        except ValueError:
            log.warning("corrupt session lock file %s: treated as expired", path)
            return None

    def _write(self, shard: str, sid: str, path: str, content: bytes, sync: bool) -> None:
        """Replace ``path`` atomically: write ``<sid>.tmp-<random>`` then ``os.replace``."""
        try:
            replace_atomically(
                path, content, tmp_prefix=os.path.join(shard, sid + _TMP_INFIX), sync=sync
            )
        except OSError as exc:
            raise self._unavailable("write", exc) from exc

    def _unlink(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._unavailable("remove", exc) from exc
