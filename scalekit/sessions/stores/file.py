"""FileStore: one file per session in sharded folders, for one server or a shared mount.

Layout under the root folder (``file:///var/app/sessions``)::

    <root>/<app>/<sid[:2]>/<sid>             the session: a header line, then the payload
    <root>/<app>/<sid[:2]>/<sid>.lock        a session lock (token and expiry), see try_lock
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
import dataclasses
import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from scalekit.errors import ConfigError, StoreUnavailable
from scalekit.sessions.stores.base import (
    ANY,
    SESSION_ID,
    CleanupStats,
    Progress,
    Record,
    SessionStore,
    as_bool,
    check_lock,
    check_payload,
    check_session_id,
    check_ttl,
    describe_os_error,
    merge_options,
    now,
)
from scalekit.urls import BackendURL, FileURL

log = logging.getLogger("scalekit.sessions")

_MAGIC = b"SKS1"
_HEADER_MAX = 256  # a header line is well under this: magic, 16-hex token, ttl, length, crc
_MUTEX = ".mutex"
_LOCK_SUFFIX = ".lock"
_TMP_INFIX = ".tmp-"
_STRIPES = 64
#: A temp file this old is what a crashed write left behind (a write takes milliseconds).
_STALE_TEMP = 600.0
_SHARD = re.compile(r"[A-Za-z0-9_-]{2}\Z")
# Directories are opened relative to their parent's descriptor and never through a link.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted in a shard cannot make the cleanup hang on open.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _new_stripes() -> list[threading.Lock]:
    return [threading.Lock() for _ in range(_STRIPES)]


# flock excludes threads only on local file systems (on NFS it becomes a POSIX lock, which
# a process holds once for all its threads), so threads also take one of these first.
_thread_locks = _new_stripes()


def _reset_thread_locks() -> None:
    """A forked child starts with free locks (a parent thread may have held one)."""
    global _thread_locks
    _thread_locks = _new_stripes()


os.register_at_fork(after_in_child=_reset_thread_locks)


@contextlib.contextmanager
def _holding(shard: str, fd: int) -> Iterator[None]:
    """Hold the shard's thread lock, then the flock on its open ``.mutex`` file ``fd``."""
    with _thread_locks[hash(shard) % _STRIPES]:
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
        ttl, data = check_ttl(ttl), check_payload(data)
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
        ttl = check_ttl(ttl)
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

    def try_lock(self, sid: str, token: str, ttl: float) -> bool:
        """Take ``<sid>.lock`` if it is absent or expired (under the shard mutex)."""
        shard, path = self._paths(sid)
        ttl = check_lock(token, ttl)
        lock_path = path + _LOCK_SUFFIX
        with self._mutex(shard, create=True):
            holder = self._read_lock(lock_path)
            if holder is not None and holder[1] > now():
                return False
            content = f"{token}\n{now() + ttl!r}\n".encode()
            self._write(shard, sid, lock_path, content, sync=False)
            return True

    def unlock(self, sid: str, token: str) -> None:
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

        Each file is first judged without the mutex from its time and header line; the
        candidates of a shard are then re-checked and unlinked under one hold of the shard
        mutex. The walk opens each folder relative to its parent and never follows a
        symbolic link; files that vanish meanwhile are skipped. Live locks stay, also with
        ``force``. A symbolic link as the app folder is refused (:class:`ConfigError`).
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch={batch!r} must be a whole number of 1 or more")
        sweep = _Sweep(self, cutoff, force, dry_run, batch, progress)
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
            token, expires = raw.decode("utf-8").split("\n")[:2]
            return token, float(expires)
        except (UnicodeDecodeError, ValueError):
            log.warning("corrupt session lock file %s: treated as expired", path)
            return None

    def _write(self, shard: str, sid: str, path: str, content: bytes, sync: bool) -> None:
        """Replace ``path`` atomically: write ``<sid>.tmp-<random>`` then ``os.replace``."""
        tmp = os.path.join(shard, f"{sid}{_TMP_INFIX}{secrets.token_hex(6)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
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
        except OSError as exc:
            raise self._unavailable("write", exc) from exc

    def _unlink(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._unavailable("remove", exc) from exc


@dataclass(frozen=True)
class _Candidate:
    """A file the unlocked pre-check judged deletable, as it was then."""

    name: str
    kind: str  # "session", "lock" or "temp"
    identity: tuple[int, int, int]  # inode, mtime (ns), size: unchanged means same verdict


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_ino, info.st_mtime_ns, info.st_size


def _kind(name: str, shard: str) -> str | None:
    """What a shard entry is by its name: "session", "lock", "temp", or None (not ours)."""
    if name[:2] != shard:
        return None
    sid, dot, rest = name.partition(".")
    if not SESSION_ID.match(sid):
        return None
    if not dot:
        return "session"
    if name == sid + _LOCK_SUFFIX:
        return "lock"
    if rest.startswith(_TMP_INFIX[1:]):
        return "temp"
    return None


class _Sweep:
    """One cleanup pass over a FileStore's shards (see :meth:`FileStore.cleanup`)."""

    def __init__(
        self,
        store: FileStore,
        cutoff: float,
        force: bool,
        dry_run: bool,
        batch: int,
        progress: Progress | None,
    ):
        self.store, self.cutoff, self.force, self.dry_run = store, cutoff, force, dry_run
        self.batch, self.progress = batch, progress
        self.at = now()
        self.stats = CleanupStats()
        self.reported = 0  # stats.examined when progress was last called
        self.locks = self.temps = 0  # leftovers removed (or, dry, that would be)

    def run(self) -> None:
        store = self.store
        try:
            top = os.open(store.folder, _DIR_FLAGS)
        except FileNotFoundError:
            return  # no session was ever saved
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(
                    f"session folder {store.folder} is a symbolic link, which sessions2trash "
                    f"does not follow: give the store the real folder's parent as its root"
                ) from None
            raise store._unavailable("open", exc) from exc
        try:
            with os.scandir(top) as entries:
                shards = sorted(
                    entry.name
                    for entry in entries
                    if _SHARD.match(entry.name) and entry.is_dir(follow_symlinks=False)
                )
            for name in shards:
                self._shard(top, name)
        except OSError as exc:
            raise store._unavailable("clean up", exc) from exc
        finally:
            os.close(top)
        if self.stats.examined != self.reported:
            self._report()
        if self.locks or self.temps:
            verb = "would remove" if self.dry_run else "removed"
            self.stats.note = (
                f"{verb} {self.locks} expired lock file(s) and {self.temps} stale temp file(s)"
            )

    def _report(self) -> None:
        self.reported = self.stats.examined
        if self.progress is not None:
            self.progress(dataclasses.replace(self.stats))

    def _shard(self, top: int, name: str) -> None:
        """Pre-check every file of one shard, settling candidates batch by batch."""
        try:
            folder = os.open(name, _DIR_FLAGS, dir_fd=top)
        except (FileNotFoundError, NotADirectoryError):
            return  # removed, or replaced by a file, since the listing
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return  # replaced by a symbolic link: never followed
            raise
        try:
            candidates: list[_Candidate] = []
            with os.scandir(folder) as entries:
                for entry in entries:
                    kind = _kind(entry.name, name)
                    if kind is None or not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if kind == "session":
                        self.stats.examined += 1
                    if self._doomed(folder, entry.name, kind, info):
                        candidates.append(_Candidate(entry.name, kind, _identity(info)))
                    if kind == "session" and self.stats.examined % self.batch == 0:
                        self._settle(folder, name, candidates)
                        candidates = []
                        self._report()
            self._settle(folder, name, candidates)
        finally:
            os.close(folder)

    def _doomed(self, folder: int, name: str, kind: str, info: os.stat_result) -> bool:
        """Whether a file is to go, judged from ``info`` and, if needed, its content."""
        if kind == "temp":
            return info.st_mtime < self.at - _STALE_TEMP
        if kind == "lock":
            expires = self._lock_expiry(folder, name)
            return expires is not None and expires <= self.at
        if self.force and info.st_mtime < self.cutoff:
            return True  # no need to read the header
        found = self._header(folder, name)
        if found is None:
            return False
        info, ttl = found
        return self._expired(info.st_mtime, ttl)

    def _expired(self, mtime: float, ttl: int | None) -> bool:
        if ttl is not None and mtime + ttl <= self.at:
            return True
        return (ttl is None or self.force) and mtime < self.cutoff

    def _settle(self, folder: int, shard: str, candidates: list[_Candidate]) -> None:
        """Re-check the candidates under the shard mutex and unlink those still doomed."""
        if not candidates:
            return
        if self.dry_run:
            for candidate in candidates:
                self._count(candidate.kind)
            return
        try:
            fd = os.open(_MUTEX, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=folder)  # fmt: skip
        except FileNotFoundError:
            return  # the shard was removed meanwhile: so were its files
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            log.warning("%s: a symbolic link as .mutex; shard left alone", self._path(shard))
            return
        try:
            with _holding(self._path(shard), fd):
                for candidate in candidates:
                    if self._still_doomed(folder, candidate):
                        try:
                            os.unlink(candidate.name, dir_fd=folder)
                        except FileNotFoundError:
                            continue
                        self._count(candidate.kind)
        finally:
            os.close(fd)

    def _still_doomed(self, folder: int, candidate: _Candidate) -> bool:
        """The pre-check again, now that nothing can change the file: an unchanged file
        keeps its verdict (time only moves on), a changed one is judged anew."""
        name = candidate.name
        try:
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        if candidate.kind == "lock":  # small, and re-taken in place by try_lock: re-read
            return self._doomed(folder, name, "lock", info)
        if _identity(info) == candidate.identity:
            return True
        return self._doomed(folder, name, candidate.kind, info)

    def _count(self, kind: str) -> None:
        if kind == "session":
            self.stats.deleted += 1
        elif kind == "lock":
            self.locks += 1
        else:
            self.temps += 1

    def _path(self, shard: str) -> str:
        """The shard's path, spelled as ``FileStore._paths`` does (it keys the thread lock)."""
        return os.path.join(self.store.folder, shard)

    def _open(self, folder: int, name: str) -> int | None:
        """``name`` opened for reading, never through a link; None if it is gone."""
        try:
            return os.open(name, _READ_FLAGS, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None  # replaced by a symbolic link: not ours to read
            raise

    def _header(self, folder: int, name: str) -> tuple[os.stat_result, int | None] | None:
        """The file's status and TTL from its header line (None for a damaged header: the
        -x rule then applies), or None if the file is gone or not a regular file."""
        fd = self._open(folder, name)
        if fd is None:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            raw = os.read(fd, _HEADER_MAX + 1)
        finally:
            os.close(fd)
        line, newline, _ = raw.partition(b"\n")
        try:
            return info, _parse_header(line).ttl if newline else None
        except _Corrupt:
            return info, None

    def _lock_expiry(self, folder: int, name: str) -> float | None:
        """When a lock file's hold ends (-inf if damaged: it counts as expired), or None."""
        fd = self._open(folder, name)
        if fd is None:
            return None
        try:
            raw = os.read(fd, 1024)
        finally:
            os.close(fd)
        try:
            return float(raw.decode("utf-8").split("\n")[1])
        except (UnicodeDecodeError, ValueError, IndexError):
            return float("-inf")
