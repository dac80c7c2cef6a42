"""DatabaseStore: uploads kept in chunk rows of two tables of their own, through pydal
(SQLite, PostgreSQL, MySQL/MariaDB); also reads web2py's single-blob ``uploadfield`` layout.

Two tables: ``table=`` names the first (default ``scalekit_upload``: one row per complete
upload), the second adds ``_chunk`` (the bytes of writes); their layout is in
:mod:`~scalekit.uploads.stores._tables`.

A write holds no transaction while its source is slow (a client sending its body): it
reads about 2 MiB of chunks from the source, inserts them under its own ``write_id`` in a
short transaction, and so on (rows no upload points at: invisible). Then one short
transaction publishes it: the name's old upload row out (a replace), the new one, pointing
at the write's rows, in. Rows no upload points at any more (a replaced upload's, a failed
write's) are deleted a few per transaction; those a stopped server or a killed writer left
go with :meth:`~DatabaseStore.remove_leftovers` (``scalekit uploads gc``) once stale. On
SQLite the write lock is held for a batch or a publish, never for a whole transfer (in WAL
mode reads never wait for it).

A read asks for about 2 MiB of chunk rows per query, each query its own short transaction
(none held while a client is slow); a range starts at chunk ``start // chunk_size``. A chunk
missing or of the wrong length is :class:`~scalekit.uploads.errors.UploadCorrupt`. One
connection per thread and process.

``blobs=person.image:image_data,doc.file:file_data`` names web2py's single-blob layouts in
the same database (``Field("image", "upload", uploadfield="image_data")``): a name not in the
chunk table is looked up in the upload field of its table, and its bytes are the blob
field's (pydal's base 64). That value is read whole (it is one value), never written, and
never deleted (:meth:`~DatabaseStore.delete` answers ``False``): the app's rows stay the app's.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice, zip_longest
from typing import Any

from pydal import DAL

from scalekit.connect import sql
from scalekit.core.errors import ConfigError, StoreNotFound, StoreUnavailable
from scalekit.core.options import as_bool, merge_options
from scalekit.core.urls import BackendURL
from scalekit.uploads.errors import UploadCorrupt
from scalekit.uploads.names import parse_name
from scalekit.uploads.stores._blobs import Blobs
from scalekit.uploads.stores._tables import Tables, like, make_tables
from scalekit.uploads.stores.base import (
    CHUNK,
    Source,
    UploadInfo,
    UploadStore,
    blocks_of,
    chunks_of,
)

__all__ = ["DatabaseStore"]

log = logging.getLogger("scalekit.uploads")

#: Bytes per chunk row unless ``chunk_size`` says otherwise: a statement well under
#: MySQL/MariaDB's ``max_allowed_packet`` (16 MiB by default, 4 MiB on older servers).
CHUNK_SIZE = 512 * 1024
#: The most bytes per chunk row: a 2 MiB row escaped in a statement fits a 4 MiB packet.
MAX_CHUNK_SIZE = 2 * 1024 * 1024
#: Bytes of chunk rows a read asks for per query (MariaDB reads 40% faster than with 1 MiB).
_PER_QUERY = 2 * CHUNK
#: The most chunk rows a write inserts per transaction (fewer when they pass _PER_QUERY).
_PER_BATCH = 8
#: Chunk rows deleted per transaction (a replaced upload's, a failed write's, leftovers).
_PER_DROP = 16
#: Names listed per query by :meth:`DatabaseStore.names`.
_PAGE = 500
#: A prefix some name may start with: the characters of names (see ``names.NAME``).
_PREFIX = re.compile(r"[A-Za-z0-9_.=-]{0,255}")
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "table": str,
    "chunk_size": int,
    "blobs": str,
    "folder": str,
    "pool_size": int,
    "connect_timeout": float,
    "statement_timeout": float,
    "create": as_bool,
}


@dataclass(frozen=True)
class _Stored:
    """An upload row: what a read needs before its first chunk."""

    size: int
    chunk_size: int
    write_id: str


class DatabaseStore(UploadStore):
    """Uploads in chunk rows of a database (see the module). Options (keywords or URL
    query): ``table`` (default ``scalekit_upload``), ``chunk_size`` (bytes per row of new
    uploads, default 512 KiB, at most 2 MiB), ``blobs`` (web2py's single-blob layouts to
    read), and for the connections ``folder``, ``pool_size``, ``connect_timeout`` (default
    5 s; on SQLite how long to wait for the write lock) and ``statement_timeout`` (default
    5 s), as :func:`scalekit.connect.sql.dal_options` reads them. ``create=False`` opens
    an existing store only, creating no file or table: a missing SQLite file or table is
    :class:`~scalekit.core.errors.StoreNotFound` on first use (with ``blobs``, missing
    tables hold no upload: only the blobs are read)."""

    kind = "database"

    def __init__(
        self,
        settings: BackendURL,
        *,
        table: str = "scalekit_upload",
        chunk_size: int = CHUNK_SIZE,
        blobs: str | dict[tuple[str, str], str] = "",
        folder: str | None = None,
        pool_size: int | None = None,
        connect_timeout: float | None = None,
        statement_timeout: float | None = None,
        create: bool = True,
    ):
        super().__init__(settings.masked)
        self.create = bool(create)
        self.table = sql.check_table_name(table, self.url)
        self.chunk_table = sql.identifier(f"{table}_chunk")
        if isinstance(chunk_size, bool) or not 0 < int(chunk_size) <= MAX_CHUNK_SIZE:
            raise ConfigError(f"{self.url}: chunk_size must be 1 to {MAX_CHUNK_SIZE} bytes")
        self.chunk_size = int(chunk_size)
        self.blobs = Blobs(blobs, self.url)
        self._dal_options = sql.dal_options(
            settings,
            folder=folder,
            timeout=connect_timeout,
            pool_size=pool_size,
            statement_timeout=statement_timeout,
        )
        self._statement_timeout = statement_timeout or sql.STATEMENT_TIMEOUT
        self._password = getattr(settings, "password", None)
        self._dals = sql.ThreadDAL(self._connect, self._prepare)

    @classmethod
    def from_url(cls, settings: BackendURL, **options: Any) -> DatabaseStore:
        """Open ``sqlite://``, ``postgres://`` or ``mysql://`` URLs; see the class."""
        return cls(settings, **merge_options(settings, _OPTIONS, options))

    def __repr__(self) -> str:
        return f"<DatabaseStore {self.url} table={self.table}>"

    # -- the protocol -------------------------------------------------------------------
    def _write(self, name: str, source: Source) -> UploadInfo:
        write_id = secrets.token_hex(16)
        count = self._insert_chunks(write_id, source)
        try:
            with self._transaction(write=True) as tables:
                replaced, created = self._publish(tables, name, write_id, count, source)
        except UploadCorrupt:  # some of its rows went as leftovers: the others go too
            self._drop_quietly(write_id)
            raise
        for old in replaced:
            self._drop_quietly(old)
        return UploadInfo(name, source.size, created, source.sha256)

    def _insert_chunks(self, write_id: str, source: Source) -> int:
        """Store ``source`` in chunk rows of ``write_id``, a short transaction for each few
        (the source is read between them, outside any); how many rows. A source that fails
        (the size limit too) has the rows stored so far deleted; a failing server leaves
        them for :meth:`remove_leftovers`."""
        blocks = blocks_of(source, self.chunk_size)
        per = max(1, min(_PER_BATCH, _PER_QUERY // self.chunk_size))
        count = 0
        while True:
            try:
                batch = list(islice(blocks, per))
            except Exception:
                self._drop_quietly(write_id)
                raise
            if not batch:
                return count
            with self._transaction(write=True) as tables:
                if not tables.chunked:
                    raise self._no_tables()
                tables.insert_chunks(write_id, count, batch)
            count += len(batch)

    def _publish(
        self, tables: Tables, name: str, write_id: str, count: int, source: Source
    ) -> tuple[list[str | None], float]:
        """Make the write ``write_id`` of ``count`` chunk rows the upload ``name``, in the
        caller's transaction: the old upload row of the name deleted, the new one inserted.
        The write ids of the replaced rows (whose chunk rows are now no upload's) and the
        upload's time."""
        if not tables.chunked:
            raise self._no_tables()
        stored = tables.chunk_count(write_id)
        if stored != count:  # removed as leftovers while its source stalled
            raise UploadCorrupt(
                f"{self.url}: upload {name}: {count - stored} of its {count} chunk rows "
                f"were removed before it was complete (by remove_leftovers?); not stored"
            )
        old = tables.remove_upload(name)
        created = time.time()
        tables.run(
            "INSERT INTO {upload} (name, size, sha256, chunk_size, created, write_id) "
            "VALUES (?, ?, ?, ?, ?, ?);",
            name, source.size, source.sha256, self.chunk_size, created, write_id,
        )  # fmt: skip
        return old, created

    def _info(self, name: str) -> UploadInfo:
        with self._transaction() as tables:
            rows = tables.select(
                "SELECT name, size, sha256, created FROM {upload} WHERE name = ?;", name
            )
            found = next((_info(row) for row in rows if row[0] == name), None)
            if found is None:
                found = self.blobs.info(tables, name)
        if found is None:
            raise self.not_found(name)
        return found

    def _read(self, name: str, start: int, end: int | None) -> Iterator[bytes]:
        with self._transaction() as tables:
            rows = tables.select(
                "SELECT name, size, chunk_size, write_id FROM {upload} WHERE name = ?;", name
            )
            stored = next(
                (
                    _Stored(_whole(size), _whole(each), write_id or "")
                    for key, size, each, write_id in rows
                    if key == name
                ),
                None,
            )
            blob = None if stored is not None else self.blobs.value(tables, name)
        if blob is not None:
            return chunks_of(memoryview(blob)[start:end])
        if stored is None:
            raise self.not_found(name)
        if stored.size < 0 or stored.chunk_size <= 0 or not stored.write_id:
            raise UploadCorrupt(
                f"{self.url}: upload {name}: its row in table {self.table} says size "
                f"{stored.size}, chunk_size {stored.chunk_size}, write_id "
                f"{stored.write_id or None}"
            )
        end = stored.size if end is None else min(end, stored.size)
        return self._chunks(name, stored, start, end)

    def _delete(self, name: str) -> bool:
        with self._transaction(write=True) as tables:
            if not tables.chunked:
                return False
            old = tables.remove_upload(name)
        for write_id in old:
            self._drop_quietly(write_id)
        return bool(old)

    def remove_leftovers(self, older_than: float, *, dry_run: bool = False) -> int:
        """Delete the chunk rows of the writes no upload row points at (a writer killed or
        cut from its server, a replaced upload's rows not yet deleted) that wrote nothing
        since ``older_than`` (seconds since the epoch): a write still under way is young.
        How many writes (``dry_run``: counted, none removed)."""
        with self._transaction() as tables:
            stale = tables.stale_writes(older_than)
        if not dry_run:
            for write_id in stale:
                self._drop(write_id)
        return len(stale)

    def names(self, prefix: str = "") -> Iterator[UploadInfo]:
        """The uploads of the chunk table, then those of the ``blobs`` layouts not in it,
        a page of :data:`_PAGE` per query; none for a prefix no name starts with."""
        if not _PREFIX.fullmatch(prefix):
            return
        pattern = like(prefix)
        after = ""
        while True:
            with self._transaction() as tables:
                rows = tables.select(
                    "SELECT name, size, sha256, created FROM {upload} WHERE name > ? AND "
                    "name LIKE ? ESCAPE '!' ORDER BY name LIMIT ?;",
                    after, pattern, _PAGE,
                )  # fmt: skip
            yield from (
                _info(row) for row in rows if row[0].startswith(prefix) and parse_name(row[0])
            )
            if len(rows) < _PAGE:
                break
            after = rows[-1][0]
        for layout in self.blobs.under(prefix):
            yield from self._blob_names(layout, prefix)

    def close(self) -> None:
        """Close this thread's connection; other threads reopen theirs on next use."""
        self._dals.close()

    # -- reading ------------------------------------------------------------------------
    def _chunks(self, name: str, stored: _Stored, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` of an upload, about :data:`_PER_QUERY` bytes a query."""
        size, each = stored.size, stored.chunk_size
        if start >= end:
            return
        first, last = start // each, (end - 1) // each
        step = max(1, _PER_QUERY // each)
        for low in range(first, last + 1, step):
            high = min(low + step, last + 1)
            with self._transaction() as tables:
                rows = tables.chunk_rows(stored.write_id, low, high)
            for seq, row in zip_longest(range(low, high), rows):
                data = None if row is None or row[0] != seq else row[1]
                offset = seq * each
                if data is None or len(data) != min(each, size - offset):
                    raise self._damaged(name, stored.write_id, seq)
                yield from chunks_of(memoryview(data)[max(start - offset, 0) : end - offset])

    def _damaged(self, name: str, write_id: str, seq: int) -> Exception:
        """:class:`UploadCorrupt` for chunk ``seq`` missing or cut, or
        :class:`UploadNotFound` when the upload was deleted (or replaced) while it was read."""
        with self._transaction() as tables:
            there = tables.publishes(name, write_id)
        if not there:
            return self.not_found(name, " (deleted while it was read)")
        return UploadCorrupt(
            f"{self.url}: upload {name}: chunk {seq} is missing or not of its length in "
            f"table {self.chunk_table}"
        )

    def _blob_names(self, layout: tuple[str, str], prefix: str) -> Iterator[UploadInfo]:
        """The names of a ``blobs`` layout starting with ``prefix``, a page per query."""
        after: str | None = ""
        while after is not None:
            with self._transaction() as tables:
                found, after = self.blobs.page(tables, layout, prefix, after, _PAGE)
            yield from found

    # -- chunk rows no upload points at -------------------------------------------------
    def _drop(self, write_id: str) -> None:
        """Delete the chunk rows of ``write_id``, :data:`_PER_DROP` rows per transaction,
        unless an upload row points at them."""
        with self._transaction() as tables:
            top = tables.last_seq(write_id)
        for low in range(0, -1 if top is None else top + 1, _PER_DROP):
            with self._transaction(write=True) as tables:
                tables.drop_chunks(write_id, low, low + _PER_DROP)

    def _drop_quietly(self, write_id: str | None) -> None:
        """:meth:`_drop`, a failure logged (not raised: the rows are leftovers then)."""
        try:
            if write_id:
                self._drop(write_id)
        except Exception as exc:  # noqa: BLE001 - remove_leftovers deletes them later
            log.warning("%s: chunk rows of write %s left for remove_leftovers: %s",
                        self.url, write_id, exc)  # fmt: skip

    # -- connections --------------------------------------------------------------------
    def _transaction(self, write: bool = False) -> contextlib.AbstractContextManager[Tables]:
        """This thread's tables in one short transaction (see ``ThreadDAL.transaction``)."""
        return self._dals.transaction(self._unavailable, write=write)

    def _connect(self) -> DAL:
        return sql.connect(
            self._dal_options, self._where, create=self.create, unavailable=self._unavailable
        )

    def _prepare(self, db: DAL) -> Tables:
        """``db`` with the store's tables made complete unless ``create`` is off (checked on
        each new connection: tables lost with a crashed server come back), its session set
        for short row locks, the ``blobs`` checked."""
        try:
            sql.session_defaults(db, self._statement_timeout, wal=self.create)
            if self.create:
                make_tables(db, db._adapter.dbengine, self.table, self.chunk_table, self.url)
            chunked = self.create or self._tables_exist(db)
            self.blobs.check(db)
            db.commit()
        except db._adapter.driver.Error as exc:
            raise self._unavailable(exc) from exc
        return Tables(db, self.table, self.chunk_table, chunked=chunked)

    def _tables_exist(self, db: DAL) -> bool:
        """Whether the upload and chunk tables exist; without ``blobs`` to read, a missing
        one is :class:`StoreNotFound`."""
        missing = [name for name in (self.table, self.chunk_table) if not sql.columns(db, name)]
        if missing and not self.blobs:
            raise self._no_tables()
        return not missing

    @property
    def _where(self) -> str:
        return f"upload database {self.url}"

    def _no_tables(self) -> StoreNotFound:
        return StoreNotFound(
            f"{self._where}: no tables {self.table}, {self.chunk_table} (create=true makes them)"
        )

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        fix = f"{sql.CHECK_SERVER} and tables {self.table}, {self.chunk_table} are usable"
        return sql.unavailable(self._where, exc, self._password, fix)


def _info(row: tuple) -> UploadInfo:
    name, size, sha256, created = row
    return UploadInfo(name, _whole(size), float(created or 0), sha256 or None)


def _whole(value: Any) -> int:
    """A size column's value; -1 for NULL (a row no write makes: a read calls it corrupt)."""
    return -1 if value is None else int(value)
