"""The session tables of DatabaseStore: their fields and indexes, created or upgraded once
per process through :mod:`scalekit.connect.sql` (also web2py's own
``web2py_session_<app>`` table), and how their datetimes are written and compared.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from pydal import DAL, Field
from pydal.objects import Expression, Query, Table

from scalekit.connect import sql

log = logging.getLogger("scalekit.sessions")


def session_fields() -> list[Field]:
    return [
        Field("locked", "boolean", default=False),
        Field("client_ip", length=64),
        Field("created_datetime", "datetime"),
        Field("modified_datetime", "datetime"),
        Field("unique_key", length=128),
        Field("session_data", "blob"),
        Field("version", "integer"),
        Field("expires_datetime", "datetime"),
    ]


def lock_fields() -> list[Field]:
    return [
        Field("session_id", length=128),
        Field("token", length=128),
        Field("expires_at", "double"),
    ]


#: The session table's indexes. ``expires_modified`` serves both cleanup rules as a range:
#: ``expires_datetime <= now``, and ``expires_datetime IS NULL AND modified_datetime <
#: cutoff``; ``modified_datetime`` serves the forced rule, whatever the expiry.
SESSION_INDEXES: tuple[sql.Index, ...] = (
    ("unique_key", ("unique_key",), True),
    ("modified_datetime", ("modified_datetime",), False),
    ("expires_modified", ("expires_datetime", "modified_datetime"), False),
)
#: The session table's datetimes that keep microseconds (sessions2trash compares them).
SESSION_PRECISE = ("created_datetime", "modified_datetime")
#: Indexes earlier versions made, dropped on upgrade (``expires_modified`` replaces it).
OBSOLETE_SESSION_INDEXES = ("expires_datetime",)
LOCK_INDEXES: tuple[sql.Index, ...] = (("session_id", ("session_id",), True),)

_MIGRATE_ATTEMPTS = 3
_schema_lock = threading.Lock()
#: (pydal URI hash, session table, lock table) whose schema this process has checked.
_ready_session_tables: set[tuple[str, str, str]] = set()


def session_tables(
    db: DAL, table: str, lock_table: str, *, migrate: bool, where: str
) -> tuple[Table, Table]:
    """Define a session table and its lock table on ``db``; the first time in this process
    (with ``migrate``), also create or upgrade them and their indexes."""
    key = (db._uri_hash, table, lock_table)
    if str(db._uri).startswith("sqlite:memory"):  # each such DAL is a new database
        key = (f"{key[0]}-{id(db)}", table, lock_table)
    if migrate and key not in _ready_session_tables:
        with _schema_lock:
            if key not in _ready_session_tables:
                tables = _migrate_session_tables(db, table, lock_table, where)
                _ready_session_tables.add(key)
                return tables
    sessions = sql.define_table(db, table, session_fields(), migrate=False)
    locks = sql.define_table(db, lock_table, lock_fields(), migrate=False)
    return sessions, locks


def _migrate_session_tables(
    db: DAL, table: str, lock_table: str, where: str
) -> tuple[Table, Table]:
    """Create or upgrade both tables; retried when another process does it too."""
    for attempt in range(1, _MIGRATE_ATTEMPTS + 1):
        try:
            sessions = sql.migrate_table(
                db, table, session_fields, SESSION_INDEXES, OBSOLETE_SESSION_INDEXES
            )
            if db._adapter.dbengine == "mysql":
                _mysql_microseconds(db, sessions, SESSION_PRECISE)
            locks = sql.migrate_table(db, lock_table, lock_fields, LOCK_INDEXES)
            db.commit()
            return sessions, locks
        except Exception as exc:
            with contextlib.suppress(Exception):
                db.rollback()
            if attempt == _MIGRATE_ATTEMPTS or not isinstance(exc, db._adapter.driver.Error):
                raise
            log.info("session tables of %s: retrying setup after %s", where, exc)
    raise AssertionError("unreachable")


def _mysql_microseconds(db: DAL, table: Table, names: tuple[str, ...]) -> None:
    """Make MySQL ``DATETIME`` columns ``DATETIME(6)``: pydal creates them without a
    fraction, which keeps whole seconds (web2py's tables too, upgraded here)."""
    rows = db.executesql(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() "
        f"AND table_name = {db._adapter.adapt(table._tablename)} "
        "AND data_type = 'datetime' AND datetime_precision = 0;"
    )
    coarse = {str(row[0]).lower() for row in rows}
    changes = [f"MODIFY {table[n]._rname} DATETIME(6)" for n in names if n.lower() in coarse]
    if changes:
        db.executesql(f"ALTER TABLE {table._rname} {', '.join(changes)};")
        log.info("table %s: %s keep microseconds now", table._tablename, ", ".join(names))


def naive_utc(timestamp: float) -> datetime:
    """A Unix time as a naive UTC datetime, with microseconds."""
    return datetime.fromtimestamp(timestamp, timezone.utc).replace(tzinfo=None)


def unix_time(value: datetime) -> float:
    """A naive UTC datetime as a Unix time."""
    return value.replace(tzinfo=timezone.utc).timestamp()


def expiry(ttl: int | None, at: float) -> datetime | None:
    """``expires_datetime`` of a record written at ``at``: rounded up to whole seconds, so
    that a record lives at least its TTL; None (never) without one."""
    return None if ttl is None else naive_utc(math.ceil(at + ttl))


def moment(db: DAL, at: float) -> Expression:
    """``at`` as a SQL literal of naive UTC with microseconds (pydal writes a datetime in
    whole seconds: too coarse for sessions2trash to tell a touch just after its cutoff
    from one just before)."""
    return Expression(db, db._adapter.adapt(utc_text(at)), type="datetime")


def live(sessions: Table, at: float) -> Query:
    """The records that have not expired at ``at``."""
    expires = sessions.expires_datetime
    return (expires == None) | (expires > naive_utc(at))  # noqa: E711 (pydal: IS NULL)


def utc_text(timestamp: float) -> str:
    """A Unix time as the store writes ``created_datetime`` and ``modified_datetime``: naive
    UTC text with microseconds (pydal would cut a datetime to whole seconds, too coarse
    for sessions2trash to tell a touch just after its cutoff from one just before)."""
    return _text(timestamp, time.gmtime)


def local_text(timestamp: float) -> str:
    """A Unix time as naive local-time text with microseconds (web2py's rows hold local
    time, in whole seconds, which compare with this as they should)."""
    return _text(timestamp, time.localtime)


def _text(timestamp: float, convert: Callable[[float], time.struct_time]) -> str:
    seconds = math.floor(timestamp)
    micro = min(int((timestamp - seconds) * 1e6), 999_999)
    return time.strftime("%Y-%m-%d %H:%M:%S", convert(seconds)) + f".{micro:06d}"
