"""The tables of :class:`~scalekit.uploads.stores.database.DatabaseStore`: fields, indexes,
how they are made, and the statements run on them.

Two tables (``table=`` names the first, default ``scalekit_upload``; the second adds
``_chunk``)::

    scalekit_upload          one row per complete upload; UNIQUE (name)
        name        string   the upload's name (on MySQL compared byte for byte)
        size        bigint   its length in bytes
        sha256      string   hex SHA-256 of its bytes, computed while they were written
        chunk_size  integer  the length of every chunk row of it but the last
        created     double   Unix time it was stored
        write_id    string   the write that stored its chunk rows
    scalekit_upload_chunk    the bytes of writes; UNIQUE (write_id, seq)
        write_id    string   32 hex digits drawn for each write
        seq         integer  chunk ``seq`` holds bytes ``seq * chunk_size`` on
        created     double   Unix time the row was written
        data        blob     the raw bytes (bound parameters: not pydal's base 64)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydal import DAL, Field
from pydal.helpers.classes import SQLCustomType

from scalekit.connect import sql
from scalekit.core.errors import ConfigError

#: The longest upload name (one file system name), the length of the name columns.
NAME_LENGTH = 255
UPLOAD_INDEXES: tuple[sql.Index, ...] = (
    ("name", ("name",), True),
    ("write_id", ("write_id",), False),
)
CHUNK_INDEXES: tuple[sql.Index, ...] = (("write_seq", ("write_id", "seq"), True),)


def name_field(engine: str) -> Field:
    """The ``name`` column: on MySQL/MariaDB ASCII compared byte for byte (its default
    collation folds case, so ``A`` would find ``a``); elsewhere a plain string."""
    if engine == "mysql":
        native = f"VARCHAR({NAME_LENGTH}) CHARACTER SET ascii COLLATE ascii_bin"
        return Field("name", SQLCustomType(type="string", native=native), length=NAME_LENGTH)
    return Field("name", length=NAME_LENGTH)


def upload_fields(engine: str) -> Callable[[], list[Field]]:
    """The fields of the upload table, one row per complete upload."""
    return lambda: [
        name_field(engine),
        Field("size", "bigint"),
        Field("sha256", length=64),
        Field("chunk_size", "integer"),
        Field("created", "double"),
        Field("write_id", length=32),
    ]


def chunk_fields() -> list[Field]:
    """The fields of the chunk table, one row per ``chunk_size`` bytes of a write (``data``
    last: the other columns are read without it to find leftovers)."""
    return [
        Field("write_id", length=32),
        Field("seq", "integer"),
        Field("created", "double"),
        Field("data", "blob"),
    ]


def make_tables(db: DAL, engine: str, upload: str, chunk: str, where: str) -> None:
    """Create the ``upload`` and ``chunk`` tables, or add what they lack, one connection at
    a time (a table is complete once its maker lets go: its indexes too); nothing more than
    a catalog query per table when they are complete: an index made again would wait for
    every upload being written (PostgreSQL locks the table first). A table that has none
    of the store's columns is an app's: :class:`ConfigError` naming ``where``, unaltered."""
    specs = (
        (upload, upload_fields(engine), UPLOAD_INDEXES),
        (chunk, chunk_fields, CHUNK_INDEXES),
    )
    with sql.schema_lock(db, f"uploads:{upload}"):
        for name, fields, indexes in specs:
            wanted, found = {field.name.lower() for field in fields()}, sql.columns(db, name)
            ours = wanted - {"name"}
            if found and not found & ours:
                raise ConfigError(
                    f"{where}: table {name} is not an upload table (it has none of "
                    f"{', '.join(sorted(ours))}); give table=<a free name>"
                )
            if not wanted <= (found or set()):
                sql.migrate_table(db, name, fields, indexes)
        db.commit()


def like(prefix: str) -> str:
    """A LIKE pattern (escape ``!``) for the values that start with ``prefix``."""
    return "".join("!" + char if char in "!%_" else char for char in prefix) + "%"


class Tables:
    """One thread's DAL, the store's tables on it, and how to run SQL there."""

    def __init__(self, db: DAL, upload: str, chunk: str, *, chunked: bool = True):
        self.db = db
        adapter = db._adapter
        self.sqlite = adapter.dbengine == "sqlite"
        #: whether the upload and chunk tables exist (else only ``blobs`` are read)
        self.chunked = chunked
        self._marker = "?" if adapter.driver.paramstyle == "qmark" else "%s"
        self._quote = adapter.dialect.quote
        self._names = {"upload": self._quote(upload), "chunk": self._quote(chunk)}
        self._statements: dict[str, str] = {}

    def run(self, statement: str, *params: Any) -> Any:
        """Run ``statement`` (``?`` marks its parameters, ``{upload}`` and ``{chunk}`` the
        tables); the cursor."""
        text = self._statements.get(statement)
        if text is None:
            text = statement.format(**self._names).replace("?", self._marker)
            self._statements[statement] = text
        adapter = self.db._adapter
        adapter.execute(text, params)
        return adapter.cursor

    def select(self, statement: str, *params: Any) -> list[tuple]:
        """The rows of :meth:`run`'s ``statement``; none when the tables do not exist."""
        return self.run(statement, *params).fetchall() if self.chunked else []

    def uploads_among(self, names: list[str]) -> set[str]:
        """Those of ``names`` that have an upload row."""
        if not names:
            return set()
        marks = ", ".join("?" * len(names))
        statement = f"SELECT name FROM {{upload}} WHERE name IN ({marks});"
        return {key for (key,) in self.select(statement, *names)}

    def publishes(self, name: str, write_id: str) -> bool:
        """Whether the upload row of ``name`` points at the chunk rows of ``write_id``."""
        there = self.select(
            "SELECT name FROM {upload} WHERE name = ? AND write_id = ?;", name, write_id
        )
        return any(key == name for (key,) in there)

    def chunk_rows(self, write_id: str, low: int, high: int) -> list[tuple]:
        """(seq, data) of the chunk rows ``low`` to ``high`` (exclusive) of ``write_id``."""
        return self.select(
            "SELECT seq, data FROM {chunk} WHERE write_id = ? AND seq >= ? AND seq < ? "
            "ORDER BY seq;",
            write_id, low, high,
        )  # fmt: skip

    # -- the write side: chunk rows under a write id, published by an upload row --------
    def insert_chunks(self, write_id: str, first: int, blocks: list[bytes]) -> None:
        """Chunk rows ``first``, ``first + 1``... of ``write_id``, holding ``blocks``."""
        now = time.time()
        for seq, block in enumerate(blocks, first):
            self.run(
                "INSERT INTO {chunk} (write_id, seq, created, data) VALUES (?, ?, ?, ?);",
                write_id, seq, now, block,
            )  # fmt: skip

    def chunk_count(self, write_id: str) -> int:
        """How many chunk rows ``write_id`` has."""
        return int(
            self.run("SELECT COUNT(*) FROM {chunk} WHERE write_id = ?;", write_id).fetchone()[0]
        )

    def last_seq(self, write_id: str) -> int | None:
        """The highest ``seq`` of the chunk rows of ``write_id``; ``None``: it has none."""
        top = self.select("SELECT MAX(seq) FROM {chunk} WHERE write_id = ?;", write_id)
        return None if not top or top[0][0] is None else int(top[0][0])

    def remove_upload(self, name: str) -> list[str | None]:
        """Delete the upload row of ``name``; the write id of each row deleted (its chunk
        rows are no upload's now; ``None``: a row no write made)."""
        old = self.select("SELECT write_id FROM {upload} WHERE name = ?;", name)
        self.run("DELETE FROM {upload} WHERE name = ?;", name)
        return [write_id for (write_id,) in old]

    def drop_chunks(self, write_id: str, low: int, high: int) -> None:
        """Delete chunk rows ``low`` to ``high`` (exclusive) of ``write_id``, unless an
        upload row points at it (a write published meanwhile keeps them)."""
        self.run(
            "DELETE FROM {chunk} WHERE write_id = ? AND seq >= ? AND seq < ? AND NOT EXISTS "
            "(SELECT 1 FROM {upload} WHERE write_id = ?);",
            write_id, low, high, write_id,
        )  # fmt: skip

    def stale_writes(self, older_than: float) -> list[str]:
        """The write ids of chunk rows that no upload row points at, the newest of whose
        rows was written before ``older_than`` (seconds since the epoch)."""
        rows = self.select(
            "SELECT c.write_id FROM {chunk} c WHERE NOT EXISTS (SELECT 1 FROM {upload} u "
            "WHERE u.write_id = c.write_id) GROUP BY c.write_id HAVING MAX(c.created) < ?;",
            older_than,
        )
        return [write_id for (write_id,) in rows]

    def run_on(self, statement: str, table: str, *columns: str, params: tuple = ()) -> Any:
        """Run ``statement`` on an app's ``table`` (``{table}``, then ``{0}``, ``{1}``... the
        ``columns``, quoted as pydal quotes them); the cursor."""
        quoted = [self._quote(column) for column in columns]
        text = statement.format(*quoted, table=self._quote(table)).replace("?", self._marker)
        adapter = self.db._adapter
        adapter.execute(text, params)
        return adapter.cursor
