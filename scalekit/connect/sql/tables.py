"""Tables on SQLite, PostgreSQL and MySQL/MariaDB: names, schema upgrades, insert-if-absent.

A table is created or upgraded from what the live database has (:func:`migrate_table`), not
from pydal's ``.table`` files alone, which are only a cache: a lost or stale folder is
harmless, and a table made by someone else (web2py) gains just the columns it lacks.
Indexes are created and dropped idempotently on each engine's terms. A command that reads
an existing table checks it is there first (:func:`require_table`), creating nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pydal import DAL, Field
from pydal.objects import Table

from scalekit.core.errors import ConfigError, StoreNotFound

log = logging.getLogger("scalekit.connect.sql")

IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names; MySQL allows 64
#: Bound parameters in one statement: SQLite before 3.32 takes at most 999.
_MAX_PARAMETERS = 800

#: An index: its name suffix (``<table>_<suffix>``), its columns, and whether it is unique.
Index = tuple[str, tuple[str, ...], bool]


def identifier(name: str) -> str:
    """A table or index name, shortened with a hash when longer than databases allow."""
    if len(name) <= MAX_IDENTIFIER:
        return name
    return f"{name[:54]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def check_table_name(table: object, where: str = "") -> str:
    """``table`` if it is a name every engine takes as it is, else :class:`ConfigError`
    (its message starts with ``where``, e.g. the masked URL)."""
    if not isinstance(table, str) or not IDENTIFIER.match(table) or len(table) > MAX_IDENTIFIER:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}table={table!r} must be a letter then letters, digits or _")
    return table


def columns(db: DAL, name: str) -> set[str] | None:
    """The lower-cased column names of table ``name`` as it is in the database, or None."""
    adapter = db._adapter
    literal = adapter.adapt(name)
    if adapter.dbengine == "sqlite":
        rows = db.executesql(f"PRAGMA table_info({literal});")
        names = {str(row[1]) for row in rows}
    else:
        schema = "current_schema()" if adapter.dbengine == "postgres" else "DATABASE()"
        rows = db.executesql(
            "SELECT column_name FROM information_schema.columns WHERE "
            f"table_schema = {schema} AND lower(table_name) = lower({literal});"
        )
        names = {str(row[0]) for row in rows}
    return {column.lower() for column in names} or None


def require_table(db: DAL, name: str, where: str) -> None:
    """:class:`StoreNotFound` ("<where>: table <name> does not exist") unless table ``name``
    is in the database; reads the catalog only (no ``define_table``, no ``.table`` file)."""
    if columns(db, name) is None:
        raise StoreNotFound(f"{where}: table {name} does not exist")


def define_table(db: DAL, name: str, fields: list[Field], **options: object) -> Table:
    """Define (or redefine) a table now, also on a DAL with ``lazy_tables``. A table whose
    creation failed (another process made it first) is forgotten, so that a retry can
    define it again: pydal keeps it half-defined and refuses the name."""
    try:
        db.define_table(name, *fields, redefine=True, **options)
    except BaseException:
        if name not in db.tables:
            vars(db).pop(name, None)
        raise
    return db[name]


def migrate_table(
    db: DAL,
    name: str,
    fields: Callable[[], list[Field]],
    indexes: tuple[Index, ...],
    obsolete: tuple[str, ...] = (),
) -> Table:
    """Make table ``name`` match ``fields`` with pydal's migrations, guided by the live
    table rather than by pydal's ``.table`` file alone, then create its ``indexes`` and
    drop the ``obsolete`` ones (name suffixes)."""
    found = columns(db, name)
    if found is None:
        table = define_table(db, name, fields(), migrate=True)
        if columns(db, name) is None and table._dbt:  # a stale .table file: pydal skipped it
            os.remove(table._dbt)
            table = define_table(db, name, fields(), migrate=True)
    else:
        missing = [field.name for field in fields() if field.name.lower() not in found]
        if missing:  # record what exists, so that pydal's migration adds just the rest
            present = [field for field in fields() if field.name.lower() in found]
            define_table(db, name, present, migrate=True, fake_migrate=True)
            log.info("table %s: adding columns %s", name, ", ".join(missing))
        table = define_table(db, name, fields(), migrate=True, fake_migrate=not missing)
    for suffix, on, unique in indexes:
        create_index(db, table, identifier(f"{name}_{suffix}"), on, unique)
    for suffix in obsolete:
        drop_index(db, table, identifier(f"{name}_{suffix}"))
    return table


@contextlib.contextmanager
def schema_lock(db: DAL, name: str) -> Iterator[None]:
    """Hold the server-wide lock ``name`` (for this connection) while tables are created or
    upgraded, so that processes making the same tables at once take turns instead of
    failing on each other's CREATE: an advisory lock on PostgreSQL, ``GET_LOCK`` on MySQL
    (waits bounded by the statement timeout); nothing on SQLite, whose writers take turns
    anyway. Leave the transaction committed or rolled back before the block ends."""
    engine = db._adapter.dbengine
    digest = hashlib.sha1(f"scalekit:{name}".encode()).digest()
    if engine == "postgres":
        key = int.from_bytes(digest[:8], "big", signed=True)
        take, give = f"SELECT pg_advisory_lock({key});", f"SELECT pg_advisory_unlock({key});"
    elif engine == "mysql":
        key = db._adapter.adapt(f"scalekit:{digest.hex()[:40]}")
        wait = db.executesql("SELECT @@innodb_lock_wait_timeout;")[0][0]
        take, give = f"SELECT GET_LOCK({key}, {wait});", f"SELECT RELEASE_LOCK({key});"
    else:
        yield
        return
    db.executesql(take)
    try:
        yield
    finally:
        db.executesql(give)


def create_index(db: DAL, table: Table, index: str, on: tuple[str, ...], unique: bool) -> None:
    """CREATE INDEX IF NOT EXISTS (pydal's create_index commits and has no IF NOT EXISTS)."""
    adapter = db._adapter
    kind = "UNIQUE INDEX" if unique else "INDEX"
    names = ", ".join(table[column]._rname for column in on)
    target = f"{adapter.dialect.quote(index)} ON {table._rname} ({names})"
    if adapter.dbengine != "mysql":
        db.executesql(f"CREATE {kind} IF NOT EXISTS {target};")
    elif not _mysql_index_exists(db, table, index):
        db.executesql(f"CREATE {kind} {target};")


def drop_index(db: DAL, table: Table, index: str) -> None:
    """DROP INDEX IF EXISTS, on each engine's terms."""
    adapter = db._adapter
    quoted = adapter.dialect.quote(index)
    if adapter.dbengine != "mysql":
        db.executesql(f"DROP INDEX IF EXISTS {quoted};")
    elif _mysql_index_exists(db, table, index):
        db.executesql(f"DROP INDEX {quoted} ON {table._rname};")


def _mysql_index_exists(db: DAL, table: Table, index: str) -> bool:
    adapter = db._adapter
    return bool(
        db.executesql(
            "SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() "
            f"AND table_name = {adapter.adapt(table._tablename)} "
            f"AND index_name = {adapter.adapt(index)};"
        )
    )


def insert_new(db: DAL, table: Table, **values: Any) -> bool:
    """INSERT one row unless a unique key of it exists (values may be pydal expressions);
    true if the row was added."""
    adapter = db._adapter
    literals = ", ".join(adapter.expand(value, table[name].type) for name, value in values.items())
    adapter.execute(_insert_new_sql(db, table, list(values), [f"({literals})"]))
    return adapter.cursor.rowcount == 1


def insert_new_rows(
    db: DAL, table: Table, names: Sequence[str], rows: Sequence[Sequence[Any]]
) -> int:
    """INSERT ``rows`` (values of columns ``names``, sent as bound parameters, in a few
    statements), skipping each row whose unique key exists; how many rows were added."""
    adapter = db._adapter
    marker = "?" if adapter.driver.paramstyle == "qmark" else "%s"
    row = f"({', '.join([marker] * len(names))})"
    per_statement = max(1, _MAX_PARAMETERS // len(names))
    added = 0
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = _insert_new_sql(db, table, names, [row] * len(chunk))
        adapter.execute(sql, [value for values in chunk for value in values])
        added += adapter.cursor.rowcount
    return added


def _insert_new_sql(db: DAL, table: Table, names: Sequence[str], rows: list[str]) -> str:
    columns = ", ".join(table[name]._rname for name in names)
    values = f"{table._rname} ({columns}) VALUES {', '.join(rows)}"
    if db._adapter.dbengine == "mysql":
        return f"INSERT IGNORE INTO {values};"
    return f"INSERT INTO {values} ON CONFLICT DO NOTHING;"
