"""DatabaseStore: tickets in one SQL table through pydal (SQLite, PostgreSQL, MySQL).

The table (``scalekit_ticket`` unless ``table=``) has web2py's ticket columns plus what
lists and summaries need without reading the JSON::

    ticket_id         string    the ticket's id; UNIQUE index (a re-run inserts nothing twice)
    ticket_data       text      the whole ticket, JSON
    created_datetime  datetime  when the error happened (naive UTC); indexed
    app, hostname, node, version, error_type, location, summary   strings, from the ticket
                      (node: NULL in rows of older versions: the hostname; version: NULL
                      in rows of older versions, and in those of tickets without one)
    occurrences       integer   identical failures counted on the ticket (NULL in rows of
                                older versions: one)

Connections (one DAL per thread and process, never one inherited through fork), the table's
upgrades and the insert that skips a stored id come from :mod:`scalekit.connect.sql`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from pydal import DAL, Field
from pydal.objects import Table

from scalekit.connect import sql
from scalekit.core.errors import CorruptData, StoreUnavailable
from scalekit.core.options import merge_options
from scalekit.core.urls import BackendURL, parse
from scalekit.tickets.stores import EVERY, Selection, TicketStore, stamp
from scalekit.tickets.ticket import ID_PATTERN, Entry, Group, entry

log = logging.getLogger("scalekit.tickets")

INDEXES: tuple[sql.Index, ...] = (
    ("ticket_id", ("ticket_id",), True),
    ("created_datetime", ("created_datetime",), False),
)
_INSERT_COLUMNS = (
    "ticket_id",
    "ticket_data",
    "created_datetime",
    "app",
    "hostname",
    "node",
    "version",
    "error_type",
    "location",
    "summary",
    "occurrences",
)
PURGE_BATCH = 1000
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "table": str,
    "folder": str,
    "connect_timeout": float,
}
_ENTRY_COLUMNS = (
    "ticket_id",
    "app",
    "created_datetime",
    "hostname",
    "node",
    "version",
    "error_type",
    "location",
    "summary",
    "occurrences",
)


def _prefer_lz4(db: DAL) -> None:
    """On PostgreSQL 14+ built with lz4, store this connection's ticket JSON compressed with
    lz4: several times faster to write than the default pglz, about as small."""
    if db._adapter.dbengine != "postgres":
        return
    try:
        db.executesql("SET default_toast_compression = 'lz4';")
    except db._adapter.driver.Error:  # older server, or built without lz4: keep pglz
        db.rollback()


def ticket_fields() -> list[Field]:
    return [
        Field("ticket_id", length=64),
        Field("ticket_data", "text"),
        Field("created_datetime", "datetime"),
        Field("app", length=64),
        Field("hostname", length=255),
        Field("node", length=255),
        Field("version", length=128),
        Field("error_type", length=255),
        Field("location", length=512),
        Field("summary", length=512),
        Field("occurrences", "integer"),
    ]


class DatabaseStore(TicketStore):
    """Tickets in a database table. Options (keywords or URL query): ``table``,
    ``folder`` (pydal's ``.table`` files; default private to the user), ``connect_timeout``
    (seconds, default 5). ``create=False`` (reading, purging) opens an existing database and
    table only, creating nothing: a missing one is :class:`~scalekit.core.errors.StoreNotFound`
    on first use (a table of an older version still gains its missing columns)."""

    def __init__(
        self,
        url: str | BackendURL,
        *,
        table: str | None = None,
        folder: str | None = None,
        connect_timeout: float | None = None,
        create: bool = True,
    ):
        settings = url if isinstance(url, BackendURL) else parse(url, kinds=("sqlite", "database"))
        given = {"table": table, "folder": folder, "connect_timeout": connect_timeout}
        options = merge_options(
            settings, _OPTIONS, {name: value for name, value in given.items() if value is not None}
        )
        self.masked = settings.masked
        self.table = sql.check_table_name(options.get("table", "scalekit_ticket"), self.masked)
        self._dal_options = sql.dal_options(
            settings, folder=options.get("folder"), timeout=options.get("connect_timeout")
        )
        self._password = getattr(settings, "password", None)  # masked in error messages
        self.create = create
        self._dals = sql.ThreadDAL(self._connect, self._prepare)

    def __repr__(self) -> str:
        return f"<DatabaseStore {self.masked} table={self.table}>"

    # -- the protocol -------------------------------------------------------------------
    def save(self, ticket: dict[str, Any]) -> None:
        self.insert([(ticket, json.dumps(ticket, ensure_ascii=False, default=str))])

    def load(self, ticket_id: str) -> dict[str, Any] | None:
        if not ID_PATTERN.match(ticket_id):
            return None
        with self._transaction() as (db, table):
            row = db(table.ticket_id == ticket_id).select(table.ticket_data).first()
        if row is None:
            return None
        try:
            return json.loads(row.ticket_data)
        except (TypeError, ValueError) as exc:
            raise CorruptData(f"ticket {ticket_id} is not valid JSON: {exc}") from None

    def entries(self, limit: int | None = None, selection: Selection = EVERY) -> list[Entry]:
        with self._transaction() as (db, table):
            rows = db(_query(table, selection)).select(
                *(table[name] for name in _ENTRY_COLUMNS),
                orderby=~table.created_datetime | ~table.id,
                limitby=(0, limit) if limit is not None else None,
            )
        return [
            Entry(
                row.ticket_id,
                row.app,
                _text(row.created_datetime),
                row.hostname,
                row.error_type,
                row.location,
                row.summary,
                row.occurrences or 1,
                row.node or row.hostname,
                row.version or "",
            )
            for row in rows
        ]

    def purge(self, before: float) -> int:
        """Deletes in batches of ``PURGE_BATCH`` rows, one commit each (short statements)."""
        old, deleted = Selection(until=before), 0
        while True:
            with self._transaction() as (db, table):
                rows = db(_query(table, old)).select(table.id, limitby=(0, PURGE_BATCH))
                ids = [row.id for row in rows]
                if ids:
                    deleted += db(table.id.belongs(ids)).delete()
            if len(ids) < PURGE_BATCH:
                return deleted

    def summary(self) -> list[Group]:
        with self._transaction() as (db, table):
            count, created = table.occurrences.coalesce(1).sum(), table.created_datetime
            first, last = created.min(), created.max()
            rows = db(table).select(
                table.error_type,
                table.location,
                count,
                first,
                last,
                groupby=table.error_type | table.location,
                orderby=~count | ~last,
            )
        return [
            Group(
                row[table.error_type],
                row[table.location],
                int(row[count]),
                _text(row[first]),
                _text(row[last]),
            )
            for row in rows
        ]

    def insert(self, tickets: list[tuple[dict[str, Any], str]]) -> int:
        """Insert ``(ticket, its JSON)`` pairs and commit; a ticket whose id is stored
        already is skipped, unless it now counts more failures: then it replaces the
        stored one. Returns how many rows were added."""
        rows = [_row(ticket, raw) for ticket, raw in tickets]
        with self._transaction() as (db, table):
            added = sql.insert_new_rows(db, table, _INSERT_COLUMNS, rows)
            for ticket_id, raw, *_, count in rows:
                if count > 1:  # a repeat: keep the highest count
                    fewer = (table.occurrences == None) | (table.occurrences < count)  # noqa: E711
                    db((table.ticket_id == ticket_id) & fewer).update(
                        ticket_data=raw, occurrences=count
                    )
            return added

    def close(self) -> None:
        """Close this thread's connection; other threads reopen theirs on next use."""
        self._dals.close()

    # -- connections --------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[tuple[DAL, Table]]:
        """This thread's DAL and table; commits after the block, rolls back on error, and
        turns driver errors into :class:`StoreUnavailable`."""
        db, table = self._dals.get()
        try:
            yield db, table
            db.commit()
        except db._adapter.driver.Error as exc:
            self._dals.drop()  # the connection may be gone: reconnect on next use
            raise self._unavailable(exc) from exc
        except BaseException:
            with contextlib.suppress(Exception):
                db.rollback()
            raise

    def _connect(self) -> DAL:
        try:
            where = f"ticket database {self.masked}"
            return sql.open_dal(self._dal_options, where, create=self.create)
        except RuntimeError as exc:  # pydal's "Failure to connect, tried 1 times"
            raise self._unavailable(exc) from None

    def _prepare(self, db: DAL) -> tuple[DAL, Table]:
        """``db`` with the ticket table made or upgraded (the existing one as it is, without
        ``create``), and defined."""
        try:
            if self.create:
                _prefer_lz4(db)
                table = sql.migrate_table(db, self.table, ticket_fields, INDEXES)
            else:
                table = self._existing_table(db)
            db.commit()
        except db._adapter.driver.Error as exc:
            raise self._unavailable(exc) from exc
        return db, table

    def _existing_table(self, db: DAL) -> Table:
        """The ticket table, :class:`StoreNotFound` if there is none. One of an older version
        (or web2py's) gains its missing columns first, on a connection of its own (the
        read-only one cannot migrate), as a write would do it."""
        where = f"ticket database {self.masked}"
        sql.require_table(db, self.table, where)
        if {field.name for field in ticket_fields()} - sql.columns(db, self.table):
            upgrade = sql.open_dal(self._dal_options, where)
            try:
                sql.migrate_table(upgrade, self.table, ticket_fields, INDEXES)
                upgrade.commit()
            finally:
                sql.close_quietly(upgrade)
        return sql.define_table(db, self.table, ticket_fields(), migrate=False)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        reason = sql.failure_reason(exc, self._password)
        return StoreUnavailable(
            f"ticket database {self.masked}: {reason}; check that the server is running "
            f"and table {self.table} is usable"
        )


def _query(table: Table, selection: Selection) -> Any:
    """The condition on ``table`` for the tickets of ``selection``."""
    query = table.id > 0
    if selection.app is not None:
        query &= table.app == selection.app
    if selection.error_type is not None:
        query &= table.error_type == selection.error_type
    if selection.since is not None:
        query &= table.created_datetime >= stamp(selection.since)
    if selection.until is not None:
        query &= table.created_datetime < stamp(selection.until)
    return query


def _row(ticket: dict[str, Any], raw: str) -> tuple[str, ...]:
    """The values of ``_INSERT_COLUMNS`` for one ticket (:class:`CorruptData` if invalid)."""
    item = entry(ticket)
    return (
        item.ticket_id,
        raw,
        item.created,
        item.app[:64],
        item.hostname[:255],
        item.node[:255],
        item.version[:128] or None,
        item.error_type[:255],
        item.location[:512],
        item.summary[:512],
        item.count,
    )


def _text(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""
