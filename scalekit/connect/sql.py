"""What the pieces that use pydal share (sessions, tickets, db): their tables' fields,
creating or upgrading them and their indexes (also web2py's own ``web2py_session_<app>``
table) from what the live database has, the private folder for pydal's ``.table`` files,
opening and closing connections, fork-safe connection pools and one-line driver errors."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from pydal import DAL, Field
from pydal._globals import THREAD_LOCAL
from pydal.connection import ConnectionPool
from pydal.objects import Table

from scalekit.connect.files import describe_os_error
from scalekit.core.errors import ConfigError, StoreUnavailable
from scalekit.core.urls import BackendURL, DatabaseURL, SQLiteURL

log = logging.getLogger("scalekit.sessions")

IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names; MySQL allows 64
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): (.+)$", re.MULTILINE)

#: URIs whose pydal connection pools scalekit fills; a forked child must not reuse them.
_pooled_uris: set[str] = set()
_inherited_pools: list[Any] = []


def pool_per_process(uri: str) -> None:
    """Give each forked child an empty pydal pool for ``uri``: the parent's connections are
    hidden from it (kept referenced, never closed, so the parent's sessions on the server
    stay intact)."""
    _pooled_uris.add(uri)


def _forget_pools_in_child() -> None:
    for uri in _pooled_uris:
        inherited = ConnectionPool.POOLS.pop(uri, None)
        if inherited:
            _inherited_pools.append(inherited)


os.register_at_fork(after_in_child=_forget_pools_in_child)


def close_quietly(db: DAL) -> None:
    """Close without committing, also when the connection is dead, and unregister the DAL
    from pydal's thread-local list."""
    with contextlib.suppress(Exception):
        db._adapter.close(action=None)
    with contextlib.suppress(Exception):
        db.close()


def failure_reason(exc: BaseException, password: str | None) -> str:
    """One line saying why pydal or its driver failed, without the password (pydal's
    connect error quotes the driver's traceback: the last line it raised says why)."""
    text = str(exc)
    raised = _RAISED.findall(text)
    lines = raised[-1:] or [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    return reason.replace(password, "***") if password else reason


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


#: An index: its name suffix (``<table>_<suffix>``), its columns, and whether it is unique.
Index = tuple[str, tuple[str, ...], bool]

#: The session table's indexes. ``expires_modified`` serves both cleanup rules as a range:
#: ``expires_datetime <= now``, and ``expires_datetime IS NULL AND modified_datetime <
#: cutoff``; ``modified_datetime`` serves the forced rule, whatever the expiry.
SESSION_INDEXES: tuple[Index, ...] = (
    ("unique_key", ("unique_key",), True),
    ("modified_datetime", ("modified_datetime",), False),
    ("expires_modified", ("expires_datetime", "modified_datetime"), False),
)
#: The session table's datetimes that keep microseconds (sessions2trash compares them).
SESSION_PRECISE = ("created_datetime", "modified_datetime")
#: Indexes earlier versions made, dropped on upgrade (``expires_modified`` replaces it).
OBSOLETE_SESSION_INDEXES = ("expires_datetime",)
LOCK_INDEXES: tuple[Index, ...] = (("session_id", ("session_id",), True),)

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
    sessions = define_table(db, table, session_fields(), migrate=False)
    locks = define_table(db, lock_table, lock_fields(), migrate=False)
    return sessions, locks


def _migrate_session_tables(
    db: DAL, table: str, lock_table: str, where: str
) -> tuple[Table, Table]:
    """Create or upgrade both tables; retried when another process does it too."""
    for attempt in range(1, _MIGRATE_ATTEMPTS + 1):
        try:
            sessions = migrate_table(
                db, table, session_fields, SESSION_INDEXES, OBSOLETE_SESSION_INDEXES,
                SESSION_PRECISE,
            )  # fmt: skip
            locks = migrate_table(db, lock_table, lock_fields, LOCK_INDEXES)
            db.commit()
            return sessions, locks
        except Exception as exc:
            with contextlib.suppress(Exception):
                db.rollback()
            if attempt == _MIGRATE_ATTEMPTS or not isinstance(exc, db._adapter.driver.Error):
                raise
            log.info("session tables of %s: retrying setup after %s", where, exc)
    raise AssertionError("unreachable")


def insert_new(db: DAL, table: Table, **values: Any) -> bool:
    """INSERT that does nothing when a unique key exists; true if a row was added."""
    adapter = db._adapter
    columns = ", ".join(table[name]._rname for name in values)
    literals = ", ".join(adapter.expand(value, table[name].type) for name, value in values.items())
    row = f"{table._rname} ({columns}) VALUES ({literals})"
    if adapter.dbengine == "mysql":
        adapter.execute(f"INSERT IGNORE INTO {row};")
    else:
        adapter.execute(f"INSERT INTO {row} ON CONFLICT DO NOTHING;")
    return adapter.cursor.rowcount == 1


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


def identifier(name: str) -> str:
    """A table or index name, shortened with a hash when longer than databases allow."""
    if len(name) <= MAX_IDENTIFIER:
        return name
    return f"{name[:54]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


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


def define_table(db: DAL, name: str, fields: list[Field], **options: object) -> Table:
    """Define (or redefine) a table now, also on a DAL with ``lazy_tables``."""
    db.define_table(name, *fields, redefine=True, **options)
    return db[name]


def migrate_table(
    db: DAL,
    name: str,
    fields: Callable[[], list[Field]],
    indexes: tuple[Index, ...],
    obsolete: tuple[str, ...] = (),
    precise: tuple[str, ...] = (),
) -> Table:
    """Make table ``name`` match ``fields`` with pydal's migrations, guided by the live
    table rather than by pydal's ``.table`` file alone, then create its indexes.
    ``precise`` names datetime columns that must keep microseconds."""
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
            log.info("session table %s: adding columns %s", name, ", ".join(missing))
        table = define_table(db, name, fields(), migrate=True, fake_migrate=not missing)
    if precise and db._adapter.dbengine == "mysql":
        _mysql_microseconds(db, table, precise)
    for suffix, on, unique in indexes:
        create_index(db, table, identifier(f"{name}_{suffix}"), on, unique)
    for suffix in obsolete:
        drop_index(db, table, identifier(f"{name}_{suffix}"))
    return table


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


def _mysql_index_exists(db: DAL, table: Table, index: str) -> bool:
    adapter = db._adapter
    return bool(
        db.executesql(
            "SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() "
            f"AND table_name = {adapter.adapt(table._tablename)} "
            f"AND index_name = {adapter.adapt(index)};"
        )
    )


def private_folder() -> str:
    """``<tmp>/scalekit-pydal-<uid>``, created 0700; refused if someone else could write
    it, since pydal unpickles the ``.table`` files it keeps there."""
    folder = os.path.join(tempfile.gettempdir(), f"scalekit-pydal-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise ConfigError(
            f"{folder} is not a private folder of user {os.getuid()}: remove it, or pass "
            "folder=... for its pydal .table files"
        )
    return folder


def dal_options(
    settings: BackendURL,
    *,
    folder: str | None,
    timeout: float | None,
    pool_size: int | None = None,
) -> dict[str, Any]:
    """The ``pydal.DAL`` arguments (``uri`` included) for a piece's own connections to a
    SQLite file or a database server: a short connect timeout (default 5 s; for SQLite how
    long to wait for a locked file), credentials decoded as pydal expects them. A relative
    SQLite path is relative to ``folder``, else to the current directory; SQLite keeps
    pydal's ``.table`` files beside the database unless ``folder`` is given."""
    timeout = 5.0 if timeout is None else float(timeout)
    if not timeout > 0:
        raise ConfigError(f"{settings.masked}: connect_timeout must be positive")
    if pool_size is not None and pool_size < 0:
        raise ConfigError(f"{settings.masked}: pool_size must be 0 or more")
    options: dict[str, Any] = {"pool_size": pool_size or 0, "folder": folder}
    if isinstance(settings, SQLiteURL):
        if settings.memory:
            raise ConfigError(
                f"{settings.masked}: an in-memory SQLite database lives in one connection; "
                "give a file, e.g. sqlite://storage.sqlite"
            )
        path = os.path.join(os.path.abspath(folder or os.getcwd()), settings.path)
        options.update(
            uri=f"sqlite://{path}",
            folder=folder or os.path.dirname(path),
            driver_args={"timeout": timeout},
            decode_credentials=True,
        )
        return options
    if not isinstance(settings, DatabaseURL):
        raise ConfigError(f"{settings.masked}: a database URL is needed here")
    # libpq takes whole seconds (and treats 1 as 2); pymysql takes a float
    seconds = math.ceil(timeout) if settings.dialect == "postgres" else timeout
    uri, decode = server_uri(settings)
    options.update(uri=uri, driver_args={"connect_timeout": seconds}, decode_credentials=decode)
    return options


def server_uri(settings: DatabaseURL) -> tuple[str, bool]:
    """The pydal URI of a database server, and whether pydal must percent-decode its
    credentials (pydal decodes them only when there is a password)."""
    if settings.password is not None:
        return settings.dal_uri, True
    user = settings.user or ""
    if any(char in user for char in ":@/%"):
        raise ConfigError(
            f"{settings.masked}: pydal reads a user name with : @ / or % only when a "
            "password follows it; add one, e.g. user:password@host"
        )
    scheme, _, rest = settings.dal_uri.partition("://")
    return f"{scheme}://{user}@{rest.partition('@')[2]}", False


def open_dal(options: dict[str, Any], where: str) -> DAL:
    """A new DAL from :func:`dal_options`: one attempt, no migration, the private folder
    when none is set. Raises :class:`StoreUnavailable` (naming ``where``) for a folder it
    cannot create; pydal's ``RuntimeError`` when the server cannot be reached. pydal's
    ``DAL(folder=)`` changes the thread's default folder: it is restored."""
    options = dict(options)
    previous = getattr(THREAD_LOCAL, "_pydal_folder_", None)
    try:
        if options["uri"].startswith("sqlite:"):
            os.makedirs(options["folder"], exist_ok=True)
        else:
            options["folder"] = options["folder"] or private_folder()
            os.makedirs(options["folder"], mode=0o700, exist_ok=True)
        return DAL(
            options.pop("uri"), migrate=False, attempts=1, check_reserved=None,
            lazy_tables=False, **options,
        )  # fmt: skip
    except OSError as exc:
        raise StoreUnavailable(
            f"{where}: cannot create a folder: {describe_os_error(exc)}; give a folder that "
            f"user {os.getuid()} can write"
        ) from exc
    finally:
        if previous is None:
            vars(THREAD_LOCAL).pop("_pydal_folder_", None)
        else:
            THREAD_LOCAL._pydal_folder_ = previous
