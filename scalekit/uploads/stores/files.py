"""FileStore: one file per upload in a folder, local or shared by every server (NFS).

Layout under the root folder (``file:///shared/uploads``), web2py's ``uploadseparate``::

    <root>/<table>.<field>/<key[:2]>/<name>              an upload
    <root>/<table>.<field>/<key[:2]>/<key>.tmp-<random>  a write in progress (left behind
                                                         only by a killed writer)
    <root>/<name>                                        web2py's flat layout: read, listed
                                                         and deleted, never written

so the uploads folder of a web2py app, with or without ``uploadseparate``, is a store as it
is (a source for ``scalekit uploads migrate`` and for downloads).

A write streams into a temp file in the upload's own folder, fsyncs it and renames it onto
the name (:func:`scalekit.connect.files.replace_atomically`): a reader sees a whole upload or
none, and a writer killed half-way leaves only a temp file, never listed, that
:meth:`FileStore.remove_leftovers` (``scalekit uploads gc``) removes once it is stale.

Someone who can write the folder can plant a symlink (``<name> -> /etc/passwd``) or a FIFO:
below the root nothing is followed if it is a symlink (each folder and the file are opened
relative to the one before with ``O_NOFOLLOW``), and only regular files are uploads, so
neither is ever served, listed or removed. The root itself may be a symlink (to a mount).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar

from scalekit.connect.files import TMP_INFIX, Folder, existing_folder, replace_atomically
from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.core.options import as_bool, merge_options
from scalekit.core.urls import BackendURL, FileURL
from scalekit.uploads.errors import UploadCorrupt, UploadNotFound
from scalekit.uploads.names import Parsed, parse_name
from scalekit.uploads.stores.base import CHUNK, Reading, Source, UploadInfo, UploadStore

__all__ = ["FileStore"]

log = logging.getLogger("scalekit.uploads")

_T = TypeVar("_T")
_ROOT = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FOLDER = _ROOT | os.O_NOFOLLOW
# O_NONBLOCK: a FIFO planted under a name does not hang the open (it is then refused)
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# the temp file of a write: <key>.tmp-<12 hex> (replace_atomically's random part)
_TEMP = re.compile(r"[A-Za-z0-9_-]{1,64}" + re.escape(TMP_INFIX) + r"[0-9a-f]{12}")
# what opening through a symlink or a file where a folder should be raises: not found here
_NOT_THERE = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR)


class FileStore(UploadStore):
    """Uploads as files under ``path``, web2py's ``uploadseparate`` layout; safe for
    threads, processes and servers sharing the folder (names are unique, writes atomic).

    ``fsync=False`` skips flushing each upload to disk (throwaway folders only).
    ``create=False`` opens an existing folder only (a missing one is
    :class:`~scalekit.core.errors.StoreNotFound`); by default a missing root is created.
    Once open, a root that is gone (an unmounted share) is
    :class:`~scalekit.core.errors.StoreUnavailable`, never an empty store.
    """

    kind = "file"

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True, create: bool = True):
        if not os.fspath(path):
            raise ConfigError("FileStore needs a folder, e.g. file:///shared/uploads")
        #: the root folder (absolute)
        self.root = os.path.abspath(os.fspath(path))
        super().__init__(f"file://{self.root}")
        self.fsync = bool(fsync)
        self._files = Folder(self.root, label="upload folder", error=StoreUnavailable, log=log)
        if not create:
            existing_folder(self.root, "upload folder")
            return
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise self._files.unavailable("create", exc) from exc

    @classmethod
    def from_url(cls, settings: BackendURL, **options: Any) -> FileStore:
        """Open ``file:///path?fsync=false&create=false``; a relative path is relative to
        the current folder."""
        if not isinstance(settings, FileURL):
            raise ConfigError(f"{settings.masked}: a FileStore needs a file:// URL")
        merged = merge_options(settings, {"fsync": as_bool, "create": as_bool}, options)
        return cls(settings.path, **merged)

    # -- the protocol -------------------------------------------------------------------
    def _write(self, name: str, source: Source) -> UploadInfo:
        parsed = _parsed(name)
        raised: list[BaseException] = []  # what the source raised: passed on as it is

        def chunks() -> Iterator[bytes]:
            try:
                yield from source
            except BaseException as exc:
                raised.append(exc)
                raise

        with self._folder(_separate(parsed), "write", create=True) as folder:
            assert folder is not None  # created
            try:
                replace_atomically(
                    name,
                    chunks(),
                    tmp_prefix=parsed.key + TMP_INFIX,
                    sync=self.fsync,
                    dir_fd=folder,
                )
                found = os.stat(name, dir_fd=folder, follow_symlinks=False)
            except OSError as exc:
                if exc in raised:
                    raise
                raise self._files.unavailable("write", exc) from exc
        return UploadInfo(name, found.st_size, found.st_mtime)

    def _info(self, name: str) -> UploadInfo:
        _, found = self._find(name, "read", _stat_regular)
        return UploadInfo(name, found.st_size, found.st_mtime)

    def _read(self, name: str, start: int, end: int | None) -> Iterator[bytes]:
        parts, (fd, found) = self._find(name, "read", _open_regular)
        stop = found.st_size if end is None else min(end, found.st_size)
        path = os.path.join(self.root, *parts, name)
        file = os.fdopen(fd, "rb", buffering=0)
        return Reading(self._chunks(file, start, stop, path), file.close)

    def _chunks(self, file: BinaryIO, start: int, stop: int, path: str) -> Iterator[bytes]:
        """The bytes ``start`` to ``stop`` of an open upload, closing it at the end."""
        with file:
            left = stop - start
            try:
                file.seek(start)
                while left > 0:
                    block = file.read(min(CHUNK, left))
                    if not block:
                        raise UploadCorrupt(f"{self.url}: {path} ends {left} bytes short")
                    left -= len(block)
                    yield block
            except OSError as exc:
                raise self._files.unavailable("read", exc) from exc

    def _delete(self, name: str) -> bool:
        removed = False
        for parts in _locations(_parsed(name)):
            with self._folder(parts, "remove") as folder:
                if folder is None or _stat_regular(folder, name, self._files) is None:
                    continue
                try:
                    os.unlink(name, dir_fd=folder)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise self._files.unavailable("remove", exc) from exc
                removed = True
        return removed

    def names(self, prefix: str = "") -> Iterator[UploadInfo]:
        """Every upload whose name starts with ``prefix``: the ones in the folder their name
        gives, then web2py's flat ones (unless the same name is in its folder)."""
        for parts, _, entry in self._regular_files(prefix):
            parsed = parse_name(entry.name)
            if parsed is None or not entry.name.startswith(prefix):
                continue
            if parts and parts != _separate(parsed):
                continue  # not where a read looks: not an upload of this store
            if not parts and self._separate_exists(parsed, entry.name):
                continue  # listed with its folder
            try:
                found = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted meanwhile
            yield UploadInfo(entry.name, found.st_size, found.st_mtime)

    def local_path(self, name: str) -> str | None:
        """The upload's file (no symlink below the root on the way), ``None`` if absent."""
        try:
            parts, _ = self._find(self.checked(name), "read", _stat_regular)
        except UploadNotFound:
            return None
        return os.path.join(self.root, *parts, name)

    def remove_leftovers(self, older_than: float, *, dry_run: bool = False) -> int:
        """Remove the temp files of writes that never finished (a killed writer's) last
        changed before ``older_than`` (seconds since the epoch); how many (``dry_run``:
        counted, none removed). A write in progress changes its temp file at every chunk,
        but a stalled client may pause: keep ``older_than`` well before now."""
        count = 0
        for parts, folder, entry in self._regular_files(""):
            if not (parts and _TEMP.fullmatch(entry.name)):
                continue  # only this store's own temp files: a flat folder's others stay
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= older_than:
                    continue
                if not dry_run:
                    os.unlink(entry.name, dir_fd=folder)
                    path = os.path.join(self.root, *parts, entry.name)
                    log.info("removed %s, left by a write that never finished", path)
            except FileNotFoundError:
                continue  # removed meanwhile
            except OSError as exc:
                raise self._files.unavailable("remove", exc) from exc
            count += 1
        return count

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

    # -- finding files without following a symlink ----------------------------------------
    @contextlib.contextmanager
    def _folder(
        self, parts: tuple[str, ...], action: str, *, create: bool = False
    ) -> Iterator[int | None]:
        """An open descriptor of ``<root>/<parts>``, each part opened ``O_NOFOLLOW`` in the
        one before; ``None`` when one is missing, a symlink or a file (``create``: made)."""
        with contextlib.ExitStack() as opened:
            where, found = self.root, None
            try:
                folder = os.open(self.root, _ROOT)
                opened.callback(os.close, folder)
                for part in parts:
                    where = os.path.join(where, part)
                    inner = _subfolder(folder, part, create)
                    if inner is None:
                        break
                    folder = inner
                    opened.callback(os.close, folder)
                else:
                    found = folder
            except OSError as exc:
                exc.filename = where  # the whole path, not the part opened
                raise self._files.unavailable(action, exc) from exc
            yield found

    def _find(
        self, name: str, action: str, get: Callable[[int, str, Folder], _T | None]
    ) -> tuple[tuple[str, ...], _T]:
        """``get(folder, name, files)`` in the upload's folder, then in the root (web2py's
        flat layout): the first found, with the folder's parts; else UploadNotFound."""
        for parts in _locations(_parsed(name)):
            with self._folder(parts, action) as folder:
                found = None if folder is None else get(folder, name, self._files)
            if found is not None:
                return parts, found
        raise self.not_found(name)

    def _separate_exists(self, parsed: Parsed, name: str) -> bool:
        with self._folder(_separate(parsed), "list") as folder:
            return folder is not None and _stat_regular(folder, name, self._files) is not None

    def _regular_files(
        self, prefix: str
    ) -> Iterator[tuple[tuple[str, ...], int, os.DirEntry[str]]]:
        """(folder parts, open folder, entry) of each regular file in the upload folders
        whose names may start with ``prefix``, then in the root; no symlink followed."""
        with self._folder((), "list") as root:
            assert root is not None  # the root is opened, never None
            for table_field in self._listed(root, folders=True):
                head = table_field.name + "."
                if parse_name(head + "k.x") is None:
                    continue  # not a <table>.<field> folder
                if not (head.startswith(prefix) or prefix.startswith(head)):
                    continue
                with self._folder((table_field.name,), "list") as outer:
                    for shard in self._listed(outer, folders=True):
                        parts = (table_field.name, shard.name)
                        with self._folder(parts, "list") as folder:
                            for entry in self._listed(folder, folders=False):
                                yield parts, folder, entry
            for entry in self._listed(root, folders=False):
                yield (), root, entry

    def _listed(self, folder: int | None, *, folders: bool) -> Iterator[os.DirEntry[str]]:
        """The folders (or regular files) in an open folder, as read (a flat folder of a
        million uploads is never one list); none in ``None``."""
        if folder is None:
            return
        wanted = os.DirEntry.is_dir if folders else os.DirEntry.is_file
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if wanted(entry, follow_symlinks=False):
                        yield entry
        except OSError as exc:
            raise self._files.unavailable("list", exc) from exc


def _parsed(name: str) -> Parsed:
    parsed = parse_name(name)
    assert parsed is not None  # checked by the protocol
    return parsed


def _separate(parsed: Parsed) -> tuple[str, ...]:
    """The folder parts of an upload in web2py's ``uploadseparate`` layout."""
    return f"{parsed.table}.{parsed.field}", parsed.key[:2]


def _locations(parsed: Parsed) -> tuple[tuple[str, ...], ...]:
    """Where an upload may be: its own folder, then the root (web2py's flat layout)."""
    return _separate(parsed), ()


def _subfolder(parent: int, part: str, create: bool) -> int | None:
    """``part`` in the open folder ``parent``, opened without following a symlink; ``None``
    if it is not a folder there, unless ``create`` (then made if missing, else OSError)."""
    try:
        return os.open(part, _FOLDER, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        if exc.errno not in _NOT_THERE:
            raise
        if create:
            raise NotADirectoryError(errno.ENOTDIR, "a symlink or a file: never followed") from exc
        return None
    with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
        os.mkdir(part, 0o700, dir_fd=parent)
    return os.open(part, _FOLDER, dir_fd=parent)


def _stat_regular(folder: int, name: str, files: Folder) -> os.stat_result | None:
    """The status of ``name`` in ``folder`` if it is a regular file (not a symlink)."""
    try:
        found = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise files.unavailable("read", exc) from exc
    return found if stat.S_ISREG(found.st_mode) else None


def _open_regular(folder: int, name: str, files: Folder) -> tuple[int, os.stat_result] | None:
    """``name`` in ``folder`` opened for reading if it is a regular file (not a symlink,
    not a FIFO); its descriptor and status."""
    try:
        fd = os.open(name, _FILE, dir_fd=folder)
    except OSError as exc:
        if exc.errno in _NOT_THERE:
            return None
        raise files.unavailable("read", exc) from exc
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        os.close(fd)
        return None
    return fd, found
