"""The tables of :class:`~scalekit.uploads.stores.database.DatabaseStore` (their layout is in
its module's docstring): fields, indexes, how they are made, and the statements run on them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydal import DAL, Field
from pydal.helpers.classes import SQLCustomType

from scalekit.connect import sql
from scalekit.core.errors import ConfigError

#: The longest upload name (one file system name), the length of the name columns.
NAME_LENGTH = 255
UPLOAD_INDEXES: tuple[sql.Index, ...] = (("name", ("name",), True),)
CHUNK_INDEXES: tuple[sql.Index, ...] = (("name_seq", ("name", "seq"), True),)


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
    ]


def chunk_fields(engine: str) -> Callable[[], list[Field]]:
    """The fields of the chunk table, one row per ``chunk_size`` bytes of an upload."""
    return lambda: [name_field(engine), Field("seq", "integer"), Field("data", "blob")]


def make_tables(db: DAL, engine: str, upload: str, chunk: str, where: str) -> None:
    """Create the ``upload`` and ``chunk`` tables, or add what they lack, one connection at
    a time (a table is complete once its maker lets go: its indexes too); nothing more than
    a catalog query per table when they are complete: an index made again would wait for
    every upload being written (PostgreSQL locks the table first). A table that has none
    of the store's columns is an app's: :class:`ConfigError` naming ``where``, unaltered."""
    specs = (
        (upload, upload_fields(engine), UPLOAD_INDEXES),
        (chunk, chunk_fields(engine), CHUNK_INDEXES),
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
        #: a write transaction is open (reads of this thread join it)
        self.writing = False
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

    def run_on(self, statement: str, table: str, *columns: str, params: tuple = ()) -> Any:
        """Run ``statement`` on an app's ``table`` (``{table}``, then ``{0}``, ``{1}``... the
        ``columns``, quoted as pydal quotes them); the cursor."""
        quoted = [self._quote(column) for column in columns]
        text = statement.format(*quoted, table=self._quote(table)).replace("?", self._marker)
        adapter = self.db._adapter
        adapter.execute(text, params)
        return adapter.cursor
