"""FileStore.cleanup: one pass over an app's shard folders (the work of sessions2trash).

This thread walks the shards in order and judges each file without any lock: a session
file by its time and header line, a lock file by the expiry inside, a temp file by its time.
A pool of threads settles each shard's candidates: under the shard's mutex (the one every
save, touch, delete and lock takes) it checks each file again and unlinks those still
doomed. Threads, because an unlink mostly waits for the disk (on a file system mounted
with ``discard``, for a TRIM of the freed block), and those waits overlap.

Folders are opened relative to their parent's descriptor, and no symbolic link is followed:
nothing outside the app's folder is read or removed. File names, the header line and the
shard mutex are :mod:`._file_record`'s (the store's own); lease files and the age of a stale
temp file are :mod:`scalekit.connect.files`'s.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import stat
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from scalekit.connect.files import LEASE_MAX, STALE_TEMP, Folder, parse_lease
from scalekit.core.errors import ConfigError
from scalekit.sessions.stores._file_record import (
    HEADER_MAX,
    LOCK_SUFFIX,
    MUTEX,
    TMP_INFIX,
    Corrupt,
    holding,
    parse_header,
)
from scalekit.sessions.stores.base import SESSION_ID, CleanupStats, Progress, now

log = logging.getLogger("scalekit.sessions")

#: Threads settling shards at once, and candidates unlinked per hold of a shard's mutex.
_SETTLERS = 4
_PER_HOLD = 64
_SHARD = re.compile(r"[A-Za-z0-9_-]{2}\Z")
# Directories are opened relative to their parent's descriptor and never through a link.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted in a shard cannot make the cleanup hang on open.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class _Candidate:
    """A file the unlocked pre-check judged deletable, as it was then."""

    name: str
    kind: str  # "session", "lock" or "temp"
    identity: tuple[int, int, int]  # inode, mtime (ns), size: unchanged means same verdict


@dataclass
class _Counts:
    """Files one settling deleted (or, dry, would delete), by kind."""

    deleted: int = 0
    locks: int = 0
    temps: int = 0

    def add(self, kind: str) -> None:
        if kind == "session":
            self.deleted += 1
        elif kind == "lock":
            self.locks += 1
        else:
            self.temps += 1

    @classmethod
    def of(cls, candidates: list[_Candidate]) -> _Counts:
        counts = cls()
        for candidate in candidates:
            counts.add(candidate.kind)
        return counts


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
    if name == sid + LOCK_SUFFIX:
        return "lock"
    if rest.startswith(TMP_INFIX[1:]):
        return "temp"
    return None


class Sweep:
    """One cleanup pass over the shards in ``folder``, a FileStore's app folder, whose
    ``files`` name its failures (see the module and FileStore.cleanup)."""

    def __init__(
        self,
        folder: str,
        files: Folder,
        cutoff: float,
        force: bool,
        dry_run: bool,
        batch: int,
        progress: Progress | None,
    ):
        self.folder, self.files = folder, files
        self.cutoff, self.force, self.dry_run = cutoff, force, dry_run
        self.batch, self.progress = batch, progress
        self.at = now()
        self.stats = CleanupStats()
        self.locks = self.temps = 0  # leftovers removed (or, dry, that would be)
        self.reported: tuple[int, int] = (0, 0)  # (examined, deleted) last reported
        self.pending: set[Future[_Counts]] = set()

    def run(self) -> None:
        try:
            top = os.open(self.folder, _DIR_FLAGS)
        except FileNotFoundError:
            return  # no session was ever saved
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(self.folder):
                raise ConfigError(
                    f"session folder {self.folder} is a symbolic link, which sessions2trash "
                    f"does not follow: give the store the real folder's parent as its root"
                ) from None
            raise self.files.unavailable("open", exc) from exc
        pool = ThreadPoolExecutor(_SETTLERS, thread_name_prefix="scalekit-sessions2trash")
        try:
            with os.scandir(top) as entries:
                shards = sorted(
                    entry.name
                    for entry in entries
                    if _SHARD.match(entry.name) and entry.is_dir(follow_symlinks=False)
                )
            for name in shards:
                batches = self.stats.examined // self.batch
                candidates = self._precheck(top, name)
                if self.dry_run:
                    self._tally(_Counts.of(candidates))
                elif candidates:
                    self.pending.add(pool.submit(self._settle, top, name, candidates))
                    if len(self.pending) >= 4 * _SETTLERS:
                        self._collect(FIRST_COMPLETED)
                if self.stats.examined // self.batch > batches:
                    self._collect(None)
                    self._report()
            self._collect(ALL_COMPLETED)
        except OSError as exc:
            raise self.files.unavailable("clean up", exc) from exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            os.close(top)
        if (self.stats.examined, self.stats.deleted) != self.reported:
            self._report()
        if self.locks or self.temps:
            verb = "would remove" if self.dry_run else "removed"
            self.stats.note = (
                f"{verb} {self.locks} expired lock file(s) and {self.temps} stale temp file(s)"
            )

    def _collect(self, until: str | None) -> None:
        """Add the counts of finished settlings: those done now (``until`` None), or after
        waiting for the first or for all; a settling's error is raised here."""
        if until is None:
            done = {future for future in self.pending if future.done()}
        else:
            done = wait(self.pending, return_when=until).done
        self.pending -= done
        for future in done:
            self._tally(future.result())

    def _tally(self, counts: _Counts) -> None:
        self.stats.deleted += counts.deleted
        self.locks += counts.locks
        self.temps += counts.temps

    def _report(self) -> None:
        self.reported = (self.stats.examined, self.stats.deleted)
        if self.progress is not None:
            self.progress(dataclasses.replace(self.stats))

    def _open_shard(self, top: int, name: str) -> int | None:
        """The shard folder, opened relative to the app folder; None if it is gone or is
        no longer a folder (a symbolic link put in its place is never followed)."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=top)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise

    def _precheck(self, top: int, name: str) -> list[_Candidate]:
        """Judge every file of a shard without its mutex; counts the sessions examined."""
        folder = self._open_shard(top, name)
        if folder is None:
            return []
        candidates: list[_Candidate] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    kind = _kind(entry.name, name)
                    if kind is None or not entry.is_file(follow_symlinks=False):
                        continue
                    if kind == "session":
                        self.stats.examined += 1
                    try:
                        identity = self._doomed(folder, entry, kind)
                    except FileNotFoundError:
                        continue
                    if identity is not None:
                        candidates.append(_Candidate(entry.name, kind, identity))
        finally:
            os.close(folder)
        return candidates

    def _doomed(
        self, folder: int, entry: os.DirEntry[str], kind: str
    ) -> tuple[int, int, int] | None:
        """The file's identity if it is to go, else None (also when it vanished)."""
        if kind == "lock":
            expires = self._lock_expiry(folder, entry.name)
            return (0, 0, 0) if expires is not None and expires <= self.at else None
        if kind == "temp" or self.force:
            info = entry.stat(follow_symlinks=False)
            if kind == "temp":
                return _identity(info) if info.st_mtime < self.at - STALE_TEMP else None
            if info.st_mtime < self.cutoff:
                return _identity(info)  # forced and old: no need to read the header
        found = self._header(folder, entry.name)
        if found is None or not self._expired(*found):
            return None
        return _identity(found[0])

    def _expired(self, info: os.stat_result, ttl: int | None) -> bool:
        mtime = info.st_mtime
        if ttl is not None and mtime + ttl <= self.at:
            return True
        return (ttl is None or self.force) and mtime < self.cutoff

    def _settle(self, top: int, shard: str, candidates: list[_Candidate]) -> _Counts:
        """Re-check a shard's candidates under its mutex (held for at most ``_PER_HOLD``
        files at a time) and unlink those still doomed. Runs in the pool."""
        counts = _Counts()
        path = os.path.join(self.folder, shard)  # spelled as FileStore._paths does
        folder = self._open_shard(top, shard)
        if folder is None:
            return counts  # the shard went away, and its files with it
        try:
            for first in range(0, len(candidates), _PER_HOLD):
                group = candidates[first : first + _PER_HOLD]
                try:
                    fd = os.open(MUTEX, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o600, dir_fd=folder)  # fmt: skip
                except FileNotFoundError:
                    return counts  # the shard was removed meanwhile
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
                    log.warning("%s/.mutex is a symbolic link: shard left alone", path)
                    return counts
                try:
                    with holding(path, fd):
                        for candidate in group:
                            if self._still_doomed(folder, candidate):
                                try:
                                    os.unlink(candidate.name, dir_fd=folder)
                                except FileNotFoundError:
                                    continue
                                counts.add(candidate.kind)
                finally:
                    os.close(fd)
        finally:
            os.close(folder)
        return counts

    def _still_doomed(self, folder: int, candidate: _Candidate) -> bool:
        """The pre-check again, now that nothing can change the file: an unchanged file
        keeps its verdict (time only moves on), a changed one is judged anew."""
        name = candidate.name
        if candidate.kind == "lock":  # small, and re-taken in place by try_lease: re-read
            expires = self._lock_expiry(folder, name)
            return expires is not None and expires <= self.at
        try:
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        if _identity(info) == candidate.identity:
            return True
        if candidate.kind == "temp":
            return info.st_mtime < self.at - STALE_TEMP
        found = self._header(folder, name)
        return found is not None and self._expired(*found)

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
            raw = os.read(fd, HEADER_MAX + 1)
        finally:
            os.close(fd)
        line, newline, _ = raw.partition(b"\n")
        try:
            return info, parse_header(line).ttl if newline else None
        except Corrupt:
            return info, None

    def _lock_expiry(self, folder: int, name: str) -> float | None:
        """When a lock file's hold ends (-inf if damaged: it counts as expired), or None."""
        fd = self._open(folder, name)
        if fd is None:
            return None
        try:
            raw = os.read(fd, LEASE_MAX)
        finally:
            os.close(fd)
        try:
            return parse_lease(raw)[1]
        except ValueError:
            return float("-inf")
