"""The upload store protocol: bytes kept under a name, written and read as a stream.

Every backend passes one conformance suite (:mod:`scalekit.testing.uploads`) and keeps
these rules:

* **Names come from the store.** :meth:`UploadStore.save` makes a new name
  (:func:`~scalekit.uploads.names.new_name`) and returns it; :meth:`UploadStore.put` writes
  under a name already made (what ``scalekit uploads migrate`` copies). A name that
  :func:`~scalekit.uploads.names.parse_name` refuses is in no store: reading or deleting it
  is :class:`~scalekit.uploads.errors.UploadNotFound`, writing it a ``ValueError``.
* **Streams, never whole files.** A write takes chunks as they come and a read yields chunks
  of at most :data:`CHUNK` bytes: a 1 GB upload never sits in memory.
* **All or nothing.** An upload is visible (to :meth:`info`, :meth:`read`, :meth:`names`)
  only once every byte is stored; a write that fails half-way (its source raised, the limit
  was passed, the server stopped) leaves nothing visible, and what it left behind (a temp
  file, a multipart upload, chunk rows) is removed then or by ``scalekit uploads gc``.
* **Immutable.** The bytes under a name never change: a name is an ETag of its own.
* Failures: :class:`~scalekit.core.errors.StoreUnavailable` when the server or folder
  cannot be reached (naming the masked URL, never a password),
  :class:`~scalekit.uploads.errors.UploadCorrupt` when stored bytes are not what was written.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from scalekit.core.urls import BackendURL
from scalekit.uploads.errors import UploadNotFound, UploadTooLarge
from scalekit.uploads.names import new_name, parse_name

__all__ = ["CHUNK", "Reading", "Source", "UploadInfo", "UploadStore", "blocks_of", "chunks_of"]

#: The most bytes one read yields (and the block a write reads its source in).
CHUNK = 1 << 20


@dataclass(frozen=True)
class UploadInfo:
    """What a store knows of one upload without reading it."""

    name: str
    size: int
    #: when it was stored (seconds since the epoch)
    modified: float
    #: hex SHA-256 of the bytes, when the store recorded it at write (``None``: not kept)
    sha256: str | None = None


def chunks_of(data: BinaryIO | bytes | Iterable[bytes], size: int = CHUNK) -> Iterator[bytes]:
    """The bytes of a file object (read in blocks), a ``bytes`` or an iterable of chunks
    (passed on as they come, empty ones skipped)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])
        return
    read = getattr(data, "read", None)
    if read is not None:
        while block := read(size):
            yield block
        return
    for block in data:
        if block:
            yield bytes(block)


def blocks_of(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The bytes of ``chunks`` cut again into blocks of exactly ``size`` bytes, the last
    one shorter (none for no bytes): the rows of a database store, an S3 upload's parts.
    While a block is out, only it and the less than ``size`` bytes after it are held."""
    held = bytearray()
    for chunk in chunks:
        held += chunk
        while len(held) >= size:
            with memoryview(held) as view:
                block, rest = bytes(view[:size]), bytearray(view[size:])
            held = rest  # the block's bytes are let go before it is handed out
            yield block
    if held:
        yield bytes(held)


class Reading(Iterator[bytes]):
    """A read's chunks with what holds them open (a file, a connection): ``close()``
    releases it also before the first chunk, which a generator's own ``finally`` cannot."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None]):
        self._chunks, self._release = chunks, release

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._release()


class Source:
    """The chunks a write stores, counted and hashed as they pass, cut off by
    :class:`~scalekit.uploads.errors.UploadTooLarge` as soon as they pass ``max_size``."""

    def __init__(self, data: BinaryIO | bytes | Iterable[bytes], max_size: int | None = None):
        self._chunks = chunks_of(data)
        self.max_size = max_size
        self.size = 0
        self._hash = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            if self.max_size is not None and self.size > self.max_size:
                raise UploadTooLarge(self.max_size)
            self._hash.update(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of the chunks read so far (all of them once iterated)."""
        return self._hash.hexdigest()


class UploadStore(abc.ABC):
    """Where uploads are kept; open one with :func:`scalekit.uploads.open_store`."""

    #: the URL kind it serves (``file``, ``sqlite``, ``database``, ``s3``)
    kind = "upload"

    def __init__(self, url: str):
        #: the store's URL, password masked: safe for logs and messages
        self.url = url

    @classmethod
    @abc.abstractmethod
    def from_url(cls, settings: BackendURL, **options: Any) -> UploadStore:
        """Open the store a parsed URL names (``options``: the URL's query, then keywords)."""

    def save(
        self,
        data: BinaryIO | bytes | Iterable[bytes],
        filename: str,
        *,
        table: str = "upload",
        field: str = "file",
        max_size: int | None = None,
    ) -> str:
        """Store a new upload the client called ``filename``; return its new name.
        ``max_size`` stops the read as soon as it is passed (nothing left stored)."""
        name = new_name(filename, table, field)
        self.put(name, Source(data, max_size))
        return name

    def put(self, name: str, source: Source | BinaryIO | bytes | Iterable[bytes]) -> UploadInfo:
        """Store ``source`` under ``name`` (made by :func:`new_name`), all or nothing; an
        upload already there under that name is replaced."""
        if parse_name(name) is None:
            raise ValueError(f"{self.url}: {name!r:.80} is not an upload name")
        if not isinstance(source, Source):
            source = Source(source)
        return self._write(name, source)

    @abc.abstractmethod
    def _write(self, name: str, source: Source) -> UploadInfo:
        """Store every chunk of ``source`` under ``name``, visible only once all are stored;
        on any exception (re-raised) leave nothing visible."""

    def info(self, name: str) -> UploadInfo:
        """Size, time and checksum of an upload; :class:`UploadNotFound` if absent."""
        return self._info(self.checked(name))

    @abc.abstractmethod
    def _info(self, name: str) -> UploadInfo:
        """:meth:`info` of a well-formed name."""

    def read(self, name: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``start`` to ``end`` (exclusive; ``None``: to the end) of an upload,
        in chunks of at most :data:`CHUNK`. :class:`UploadNotFound` is raised by this call,
        before the first chunk; a failure later (the server stopped) by the iteration.
        Close the iterator when stopping early."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte span {start}..{end}")
        return self._read(self.checked(name), start, end)

    @abc.abstractmethod
    def _read(self, name: str, start: int, end: int | None) -> Iterator[bytes]:
        """:meth:`read` of a well-formed name (raising UploadNotFound eagerly)."""

    def delete(self, name: str) -> bool:
        """Remove an upload; ``False`` if it was not there (a bad name is not there)."""
        return parse_name(name) is not None and self._delete(name)

    @abc.abstractmethod
    def _delete(self, name: str) -> bool:
        """:meth:`delete` of a well-formed name."""

    @abc.abstractmethod
    def names(self, prefix: str = "") -> Iterator[UploadInfo]:
        """Every complete upload whose name starts with ``prefix`` (``"person.image."``),
        in no set order; what a failed write left behind is not listed."""

    def remove_leftovers(self, older_than: float, *, dry_run: bool = False) -> int:
        """Remove what writes that never finished left behind (a killed writer's temp file,
        an unfinished multipart upload, a database write's chunk rows that no upload row
        points at), begun (for chunk rows: last written) before ``older_than`` (seconds
        since the epoch); return how many (``dry_run``: counted, none removed).
        This default is for a store whose writes leave nothing behind."""
        return 0

    def local_path(self, name: str) -> str | None:
        """A file on this machine holding the upload (downloads then hand it to the
        server's ``wsgi.file_wrapper``, for ``sendfile``), ``None`` where there is none."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and clients; the store opens them again if used after."""

    def field_options(self, **options: Any) -> dict[str, Any]:
        """The keywords of a pydal ``Field("image", "upload", **store.field_options())``
        that keep the field's files in this store; ``options``: ``max_size``,
        ``autodelete`` (see :func:`scalekit.uploads.fields.field_options`)."""
        from scalekit.uploads.fields import field_options  # pydal loads when a model asks

        return field_options(self, **options)

    def not_found(self, name: str, why: str = "") -> UploadNotFound:
        """The error for a well-formed name the store does not hold (``why``: more said)."""
        return UploadNotFound(f"{self.url}: no upload {name}{why}")

    def checked(self, name: str) -> str:
        """``name`` if well formed, else :class:`UploadNotFound` (no store has it)."""
        if parse_name(name) is None:
            raise UploadNotFound(f"{self.url}: no upload {name!r:.80}")
        return name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
