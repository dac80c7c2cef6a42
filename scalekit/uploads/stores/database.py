"""DatabaseStore: uploads kept in chunk rows of two tables of their own, through pydal
(SQLite, PostgreSQL, MySQL/MariaDB); also reads web2py's single-blob ``uploadfield`` layout.

Two tables (``table=`` names the first, default ``scalekit_upload``; the second adds
``_chunk``)::

    scalekit_upload          one row per complete upload; UNIQUE (name)
        name        string   the upload's name (on MySQL compared byte for byte)
        size        bigint   its length in bytes
        sha256      string   hex SHA-256 of its bytes, computed while they were written
        chunk_size  integer  the length of every chunk row of it but the last
        created     double   Unix time it was stored
    scalekit_upload_chunk    its bytes; UNIQUE (name, seq)
        name, seq   string, integer   chunk ``seq`` holds bytes ``seq * chunk_size`` on
        data        blob     the raw bytes (bound parameters: not pydal's base 64)

A write is one transaction on the store's own connection: the old rows of the name deleted
(a replace), a chunk row inserted as each ``chunk_size`` bytes arrive, the upload row last,
then the commit. A failing source, the size limit or a server that stops leaves nothing: the
transaction is rolled back (or dies with its connection). On SQLite the write holds the
database's write lock until it commits: one upload at a time per file.

A read asks for a few chunks per query (about :data:`~scalekit.uploads.stores.base.CHUNK`
bytes), each query its own short transaction on a second connection of the thread (never
the writer's: a store's read can be another write's source); a range starts at chunk
``start // chunk_size``. A chunk missing or of the wrong length is
:class:`~scalekit.uploads.errors.UploadCorrupt`.

``blobs=person.image:image_data,doc.file:file_data`` names web2py's single-blob layouts in
the same database (``Field("image", "upload", uploadfield="image_data")``): a name not in the
chunk table is looked up in the upload field of its table, and its bytes are the blob
field's (pydal's base 64). That value is read whole (it is one value), never written, and
never deleted (:meth:`~DatabaseStore.delete` answers ``False``): the app's rows stay the app's.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

from pydal import DAL

from scalekit.connect import sql
from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.core.options import merge_options
from scalekit.core.urls import BackendURL
from scalekit.uploads.errors import UploadCorrupt, UploadNotFound
from scalekit.uploads.names import parse_name
from scalekit.uploads.stores._tables import (
    CHUNK_INDEXES,
    UPLOAD_INDEXES,
    Tables,
    chunk_fields,
    parse_blobs,
    upload_fields,
)
from scalekit.uploads.stores.base import CHUNK, Source, UploadInfo, UploadStore

__all__ = ["DatabaseStore"]

#: Bytes per chunk row unless ``chunk_size`` says otherwise: a statement well under
#: MySQL/MariaDB's ``max_allowed_packet`` (16 MiB by default, 4 MiB on older servers).
CHUNK_SIZE = 512 * 1024
#: The most bytes per chunk row: a 2 MiB row escaped in a statement fits a 4 MiB packet.
MAX_CHUNK_SIZE = 2 * 1024 * 1024
#: Names listed per query by :meth:`DatabaseStore.names`.
_PAGE = 500
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "table": str,
    "chunk_size": int,
    "blobs": str,
    "folder": str,
    "pool_size": int,
    "connect_timeout": float,
    "statement_timeout": float,
}


@dataclass(frozen=True)
class _Stored:
    """An upload row: what a read needs before its first chunk."""

    size: int
    chunk_size: int


class DatabaseStore(UploadStore):
    """Uploads in chunk rows of a database (see the module). Options (keywords or URL
    query): ``table`` (default ``scalekit_upload``), ``chunk_size`` (bytes per row of new
    uploads, default 512 KiB, at most 2 MiB), ``blobs`` (web2py's single-blob layouts to
    read), and for the connections ``folder``, ``pool_size``, ``connect_timeout`` (default
    5 s; on SQLite how long to wait for the write lock) and ``statement_timeout`` (default
    5 s), as :func:`scalekit.connect.sql.dal_options` reads them."""

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
    ):
        super().__init__(settings.masked)
        self.table = sql.check_table_name(table, self.url)
        self.chunk_table = sql.identifier(f"{table}_chunk")
        if isinstance(chunk_size, bool) or not 0 < int(chunk_size) <= MAX_CHUNK_SIZE:
            raise ConfigError(f"{self.url}: chunk_size must be 1 to {MAX_CHUNK_SIZE} bytes")
        self.chunk_size = int(chunk_size)
        self.blobs = parse_blobs(blobs, self.url)
        self._dal_options = sql.dal_options(
            settings,
            folder=folder,
            timeout=connect_timeout,
            pool_size=pool_size,
            statement_timeout=statement_timeout,
        )
        self._statement_timeout = statement_timeout or sql.STATEMENT_TIMEOUT
        self._password = getattr(settings, "password", None)
        self._writers = sql.ThreadDAL(self._connect, self._prepare)
        self._readers = sql.ThreadDAL(self._connect, self._prepare)

    @classmethod
    def from_url(cls, settings: BackendURL, **options: Any) -> DatabaseStore:
        """Open ``sqlite://``, ``postgres://`` or ``mysql://`` URLs; see the class."""
        return cls(settings, **merge_options(settings, _OPTIONS, options))

    def __repr__(self) -> str:
        return f"<DatabaseStore {self.url} table={self.table}>"

    # -- the protocol -------------------------------------------------------------------
    def _write(self, name: str, source: Source) -> UploadInfo:
        with self._transaction(self._writers, write=True) as tables:
            tables.run("DELETE FROM {chunk} WHERE name = ?;", name)
            tables.run("DELETE FROM {upload} WHERE name = ?;", name)
            for seq, block in enumerate(_blocks(source, self.chunk_size)):
                tables.run(
                    "INSERT INTO {chunk} (name, seq, data) VALUES (?, ?, ?);", name, seq, block
                )
            created = time.time()
            tables.run(
                "INSERT INTO {upload} (name, size, sha256, chunk_size, created) "
                "VALUES (?, ?, ?, ?, ?);",
                name, source.size, source.sha256, self.chunk_size, created,
            )  # fmt: skip
        return UploadInfo(name, source.size, created, source.sha256)

    def _info(self, name: str) -> UploadInfo:
        with self._transaction(self._readers) as tables:
            rows = tables.run(
                "SELECT name, size, sha256, created FROM {upload} WHERE name = ?;", name
            ).fetchall()
            found = next((_info(row) for row in rows if row[0] == name), None)
            if found is None:
                found = self._blob_info(tables, name)
        if found is None:
            raise self._not_found(name)
        return found

    def _read(self, name: str, start: int, end: int | None) -> Iterator[bytes]:
        with self._transaction(self._readers) as tables:
            rows = tables.run(
                "SELECT name, size, chunk_size FROM {upload} WHERE name = ?;", name
            ).fetchall()
            stored = [_Stored(int(size), int(each)) for key, size, each in rows if key == name]
            blob = None if stored else self._blob(tables, name)
        if blob is not None:
            return _slices(blob, start, end)
        if not stored:
            raise self._not_found(name)
        end = stored[0].size if end is None else min(end, stored[0].size)
        return self._chunks(name, stored[0], start, end)

    def _delete(self, name: str) -> bool:
        with self._transaction(self._writers, write=True) as tables:
            tables.run("DELETE FROM {chunk} WHERE name = ?;", name)
            return tables.run("DELETE FROM {upload} WHERE name = ?;", name).rowcount > 0

    def names(self, prefix: str = "") -> Iterator[UploadInfo]:
        """The uploads of the chunk table, then those of the ``blobs`` layouts not in it,
        a page of :data:`_PAGE` per query."""
        pattern = _like(prefix)
        after = ""
        while True:
            with self._transaction(self._readers) as tables:
                rows = tables.run(
                    "SELECT name, size, sha256, created FROM {upload} WHERE name > ? AND "
                    "name LIKE ? ESCAPE '!' ORDER BY name LIMIT ?;",
                    after, pattern, _PAGE,
                ).fetchall()  # fmt: skip
            yield from (_info(row) for row in rows if row[0].startswith(prefix))
            if len(rows) < _PAGE:
                break
            after = rows[-1][0]
        for table, field in self.blobs:
            if f"{table}.{field}.".startswith(prefix) or prefix.startswith(f"{table}.{field}."):
                yield from self._blob_names(table, field, prefix)

    def close(self) -> None:
        """Close this thread's connections; other threads reopen theirs on next use."""
        self._writers.close()
        self._readers.close()

    # -- reading ------------------------------------------------------------------------
    def _chunks(self, name: str, stored: _Stored, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` of an upload, about :data:`CHUNK` bytes per query."""
        size, each = stored.size, stored.chunk_size
        if start >= end:
            return
        first, last = start // each, (end - 1) // each
        step = max(1, CHUNK // each)
        for low in range(first, last + 1, step):
            high = min(low + step, last + 1)
            with self._transaction(self._readers) as tables:
                rows = tables.run(
                    "SELECT seq, data FROM {chunk} WHERE name = ? AND seq >= ? AND seq < ? "
                    "ORDER BY seq;",
                    name, low, high,
                ).fetchall()  # fmt: skip
            for seq, row in zip_longest(range(low, high), rows):
                data = None if row is None or row[0] != seq else row[1]
                offset = seq * each
                if data is None or len(data) != min(each, size - offset):
                    raise self._damaged(name, seq)
                yield from _slices(data, max(start - offset, 0), end - offset)

    def _damaged(self, name: str, seq: int) -> Exception:
        """:class:`UploadCorrupt` for chunk ``seq`` missing or cut, or
        :class:`UploadNotFound` when the upload was deleted while it was read."""
        with self._transaction(self._readers) as tables:
            there = tables.run("SELECT name FROM {upload} WHERE name = ?;", name).fetchall()
        if not any(key == name for (key,) in there):
            return self._not_found(name, " (deleted while it was read)")
        return UploadCorrupt(
            f"{self.url}: upload {name}: chunk {seq} is missing or not of its length in "
            f"table {self.chunk_table}"
        )

    # -- web2py's single-blob layouts -----------------------------------------------------
    def _blob(self, tables: Tables, name: str) -> bytes | None:
        """The bytes of ``name`` in a ``blobs`` layout (pydal's base 64 decoded), or None."""
        layout = self._layout(name)
        if layout is None:
            return None
        table, field, blob = layout
        rows = tables.run_on(
            "SELECT {0}, {1} FROM {table} WHERE {0} = ?;", table, field, blob, params=(name,)
        ).fetchall()
        values = [value for key, value in rows if key == name and value is not None]
        if not values:
            return None
        try:
            return base64.b64decode(_bytes(values[0]), validate=True)
        except (binascii.Error, ValueError):
            raise UploadCorrupt(
                f"{self.url}: upload {name}: {table}.{blob} does not hold base 64 "
                "(pydal's encoding of a blob)"
            ) from None

    def _blob_info(self, tables: Tables, name: str) -> UploadInfo | None:
        """:meth:`info` of ``name`` in a ``blobs`` layout, or None."""
        layout = self._layout(name)
        if layout is None:
            return None
        table, field, blob = layout
        rows = tables.run_on(_BLOB_SIZES + "= ?;", table, field, blob, params=(name,))
        found = _blob_infos(rows.fetchall(), f"{table}.{field}.")
        return next((info for info in found if info.name == name), None)

    def _blob_names(self, table: str, field: str, prefix: str) -> Iterator[UploadInfo]:
        """The names of a ``blobs`` layout starting with ``prefix``, but those in the
        chunk table (a copy made by ``scalekit uploads migrate`` is listed once)."""
        blob, head = self.blobs[(table, field)], f"{table}.{field}."
        after = ""
        while True:
            with self._transaction(self._readers) as tables:
                rows = tables.run_on(
                    _BLOB_SIZES + "> ? AND {0} LIKE ? ESCAPE '!' ORDER BY {0} LIMIT ?;",
                    table, field, blob, params=(after, _like(max(prefix, head, key=len)), _PAGE),
                ).fetchall()  # fmt: skip
                found = list(_blob_infos(rows, head))
                marks = ", ".join("?" * len(found))
                copied = {
                    key
                    for (key,) in tables.run(
                        f"SELECT name FROM {{upload}} WHERE name IN ({marks});",
                        *(info.name for info in found),
                    ).fetchall()
                } if found else set()  # fmt: skip
            yield from (info for info in found if info.name not in copied)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    def _layout(self, name: str) -> tuple[str, str, str] | None:
        """(table, upload field, blob field) of the ``blobs`` layout ``name`` belongs to."""
        parsed = parse_name(name)
        blob = parsed and self.blobs.get((parsed.table, parsed.field))
        return (parsed.table, parsed.field, blob) if blob else None

    # -- connections --------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self, dals: sql.ThreadDAL, write: bool = False) -> Iterator[Tables]:
        """This thread's reader or writer tables in one transaction (on SQLite, a write
        takes the lock first), committed after the block, rolled back on any exception;
        driver errors become :class:`StoreUnavailable` (the connection dropped)."""
        tables = dals.get()
        db = tables.db
        try:
            if write and tables.sqlite:
                sql.begin_immediate(db)
            yield tables
            db.commit()
        except db._adapter.driver.Error as exc:
            dals.drop()  # the connection may be gone: reconnect on next use
            raise self._unavailable(exc) from exc
        except BaseException:
            try:
                db.rollback()
            except Exception:  # noqa: BLE001 - the connection is gone: reopen on next use
                dals.drop()
            raise

    def _connect(self) -> DAL:
        try:
            return sql.open_dal(self._dal_options, self._where)
        except RuntimeError as exc:  # pydal's "Failure to connect, tried 1 times"
            raise self._unavailable(exc) from None

    def _prepare(self, db: DAL) -> Tables:
        """``db`` with the store's tables created or upgraded (one process at a time; on each
        new connection, so that tables lost with a crashed server come back), its session
        set for short row locks, and the ``blobs`` layouts checked."""
        try:
            engine = db._adapter.dbengine
            if engine == "mysql":  # no gap locks; a row lock waits no longer than a statement
                wait = max(1, round(self._statement_timeout))
                db.executesql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED;")
                db.executesql(
                    f"SET SESSION innodb_lock_wait_timeout = {wait}, lock_wait_timeout = {wait};"
                )
            with sql.schema_lock(db, f"uploads:{self.table}"):
                sql.migrate_table(db, self.table, upload_fields(engine), UPLOAD_INDEXES)
                sql.migrate_table(db, self.chunk_table, chunk_fields(engine), CHUNK_INDEXES)
                db.commit()
            self._check_blobs(db)
            db.commit()
        except db._adapter.driver.Error as exc:
            raise self._unavailable(exc) from exc
        return Tables(db, self.table, self.chunk_table)

    def _check_blobs(self, db: DAL) -> None:
        """:class:`ConfigError` for a ``blobs`` layout whose table or columns are missing."""
        for (table, field), blob in self.blobs.items():
            found = sql.columns(db, table) or set()
            missing = [column for column in (field, blob) if column.lower() not in found]
            if missing:
                raise ConfigError(
                    f"{self.url}: blobs={table}.{field}:{blob}: table {table} has no column "
                    f"{', '.join(missing)} in this database"
                )

    @property
    def _where(self) -> str:
        return f"upload database {self.url}"

    def _not_found(self, name: str, why: str = "") -> UploadNotFound:
        return UploadNotFound(f"{self.url}: no upload {name}{why}")

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        reason = sql.failure_reason(exc, self._password)
        return StoreUnavailable(
            f"{self._where}: {reason}; check that the server is running and tables "
            f"{self.table}, {self.chunk_table} are usable"
        )


#: The upload field, the blob's length and its last two bytes (its base 64 padding), of an
#: app's table: ``WHERE {0} `` then a condition on the upload field follows.
_BLOB_SIZES = (
    "SELECT {0}, LENGTH({1}), SUBSTR({1}, LENGTH({1}) - 1, 2) FROM {table} "
    "WHERE {1} IS NOT NULL AND {0} "
)


def _blob_infos(rows: Iterable[tuple], head: str) -> Iterator[UploadInfo]:
    """:class:`UploadInfo` of the ``blobs`` rows whose name is well formed and starts with
    ``head``: the size from the base 64's length and padding, no time (0)."""
    for key, length, tail in rows:
        if key.startswith(head) and parse_name(key):
            padding = _bytes(tail or b"").count(b"=") if length else 0
            yield UploadInfo(key, int(length) // 4 * 3 - padding, 0.0)


def _info(row: tuple) -> UploadInfo:
    name, size, sha256, created = row
    return UploadInfo(name, int(size), float(created), sha256 or None)


def _blocks(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The bytes of ``chunks`` cut into blocks of exactly ``size`` (the last shorter)."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


def _slices(data: Any, start: int, end: int | None) -> Iterator[bytes]:
    """Bytes ``start`` to ``end`` of one value, in pieces of at most :data:`CHUNK`."""
    view = memoryview(data)[start:end]
    for offset in range(0, len(view), CHUNK):
        yield bytes(view[offset : offset + CHUNK])


def _bytes(value: Any) -> bytes:
    """A blob value as the driver returned it (str, bytes, memoryview) as bytes."""
    return value.encode("ascii") if isinstance(value, str) else bytes(value)


def _like(prefix: str) -> str:
    """A LIKE pattern (escape ``!``) for the names that start with ``prefix``."""
    return "".join("!" + char if char in "!%_" else char for char in prefix) + "%"
