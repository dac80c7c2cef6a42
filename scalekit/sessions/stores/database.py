"""DatabaseStore: sessions in web2py's ``web2py_session_<app>`` table, through pydal.

Two tables per app (names override with ``table=``; locks then go to ``<table>_lock``)::

    web2py_session_<app>          web2py's columns, plus what conflict safety needs
        locked             boolean   web2py's; written False
        client_ip          string    web2py's; left NULL (the store API has no client)
        created_datetime   datetime  when the record was created (UTC)
        modified_datetime  datetime  last save or touch (UTC): Record.touched_at
        unique_key         string    the session id; UNIQUE index
        session_data       blob      the payload
        version            integer   compare-and-set counter; NULL (web2py rows) counts as 0
        expires_datetime   datetime  when the record expires (UTC); NULL never

    scalekit_session_lock_<app>   session locks: session_id (UNIQUE), token, expires_at

Datetimes are naive UTC. ``created_datetime`` and ``modified_datetime`` keep microseconds
(on MySQL/MariaDB the store makes them ``DATETIME(6)``: pydal makes ``DATETIME``, whole seconds);
``expires_datetime`` has whole seconds (pydal's precision) and is rounded up, so a record
lives at least its TTL, and at most two seconds longer.

An existing web2py session table is upgraded in place: the store reads the live table's
columns, and pydal's migration adds the missing ones (``.table`` files are only a cache of
what the store checks, so a lost or stale ``folder`` is harmless).

The schema lives in ``_sql_schema``, the cleanup's SQL in ``_sql_cleanup``; connections (one
DAL per thread and process), upgrades and insert-if-absent come from
:mod:`scalekit.connect.sql`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydal import DAL
from pydal.objects import Table

from scalekit.connect import sql
from scalekit.core.checks import check_lease
from scalekit.core.compat import renamed_keyword
from scalekit.core.errors import ConfigError, InvalidArgument, StoreUnavailable
from scalekit.core.options import as_bool, merge_options
from scalekit.core.urls import BackendURL, mask, parse
from scalekit.sessions.stores import _sql_cleanup
from scalekit.sessions.stores._sql_schema import (
    expiry,
    live,
    moment,
    naive_utc,
    session_tables,
    unix_time,
)
from scalekit.sessions.stores.base import (
    ANY,
    CleanupStats,
    Progress,
    Record,
    SessionStore,
    check_payload,
    check_session_id,
    now,
    ttl_seconds,
)

log = logging.getLogger("scalekit.sessions")

_ENGINES = ("sqlite", "postgres", "mysql")


class DatabaseStore(SessionStore):
    """Sessions in a SQL database (SQLite, PostgreSQL, MySQL) through pydal.

    Two ways to use it:

    * **By URL** (``open_store("postgres://u:p@h/db")`` or ``DatabaseStore(url)``): the store
      owns its DAL, one per thread and per process, opened on first use (never shared with
      a forked child), and commits every operation.
    * **On the app's DAL** (``DatabaseStore(db=db, app_name="shop", commit=False)``): the store
      runs in the app's transaction and never commits or rolls it back, so the session
      write commits or rolls back with the app's own changes. Locks then live in that
      transaction too: on PostgreSQL and MySQL a second request taking the same lock
      waits for the first transaction to end. With ``commit=True`` (the default) the
      store commits (or, on error, rolls back) the app's DAL after each operation.
      The constructor defines the tables on ``db`` and, the first time in a process with
      ``migrate``, creates or upgrades them, which commits like any pydal migration:
      create the store where the app defines its tables.

    Options (keywords, or URL query for the store's own DAL): ``table`` (session table
    name), ``migrate`` (create/upgrade tables and indexes, default true; false expects
    them to exist), and for the own DAL ``folder`` (where pydal keeps its ``.table`` files
    and ``sql.log``: default ``<tmp>/scalekit-pydal-<uid>``, private to the user; SQLite
    keeps ``.table`` files beside the database file, and a relative SQLite path is relative
    to ``folder``, else to the current directory), ``pool_size`` (pydal connection pool,
    default 0), ``connect_timeout`` (seconds, default 5; for SQLite how long to wait
    for a locked database) and ``statement_timeout`` (seconds, default 5: on a server, how
    long a statement may run; a frozen server fails the call about a second later, see
    :func:`~scalekit.connect.sql.bound_args`). pydal still sleeps 1 s after a failed
    connection attempt. ``create=False`` opens an existing store only (``sessions2trash``):
    a missing SQLite file or session table is :class:`~scalekit.core.errors.StoreNotFound`
    and nothing is created; an existing table is still upgraded with ``migrate``.
    """

    kind = "database"

    @renamed_keyword("app", "app_name")
    def __init__(
        self,
        url: str | BackendURL | None = None,
        app_name: str = "app",
        *,
        db: DAL | None = None,
        commit: bool = True,
        table: str | None = None,
        migrate: bool = True,
        folder: str | None = None,
        pool_size: int | None = None,
        connect_timeout: float | None = None,
        statement_timeout: float | None = None,
        create: bool = True,
    ):
        super().__init__(app_name)
        if (url is None) == (db is None):
            raise ConfigError("DatabaseStore takes a database URL or db=<a pydal DAL>, one")
        if table is not None:
            sql.check_table_name(table)
        self.table = table or sql.identifier(f"web2py_session_{self.app_name}")
        self.lock_table = sql.identifier(
            f"{table}_lock" if table else f"scalekit_session_lock_{self.app_name}"
        )
        self.migrate = bool(migrate)
        self.create = bool(create)
        self.commit = bool(commit)
        self._password: str | None = None
        if db is not None:
            own = (folder, pool_size, connect_timeout, statement_timeout)
            if any(option is not None for option in own):
                raise ConfigError(
                    "folder, pool_size, connect_timeout and statement_timeout set up the "
                    "store's own DAL; with db= the app's DAL is used as it is"
                )
            self.masked = mask(str(db._uri))
            self._db: DAL | None = db
            self._check_engine(db)
            self._app_tables = self._prepare(db)
            return
        self._db = None
        settings = url if isinstance(url, BackendURL) else parse(url, kinds=("sqlite", "database"))
        self.masked = settings.masked
        self._dal_options = sql.dal_options(
            settings,
            folder=folder,
            timeout=connect_timeout,
            pool_size=pool_size,
            statement_timeout=statement_timeout,
        )
        self._password = getattr(settings, "password", None)
        self._dals = sql.ThreadDAL(self._connect, self._prepare)

    @classmethod
    @renamed_keyword("app", "app_name")
    def from_url(
        cls, settings: BackendURL, app_name: str = "app", *, create: bool = True, **options: Any
    ) -> DatabaseStore:
        """Open ``sqlite://``, ``postgres://`` or ``mysql://`` URLs; see the class options."""
        spec: dict[str, Callable[[str], Any]] = {
            "table": str,
            "migrate": as_bool,
            "folder": str,
            "pool_size": int,
            "connect_timeout": float,
            "statement_timeout": float,
        }
        merged = merge_options(settings, spec, options)
        return cls(settings, app_name=app_name, create=create, **merged)

    def __repr__(self) -> str:
        return f"<DatabaseStore {self.masked} table={self.table}>"

    # -- the protocol -------------------------------------------------------------------
    def load(self, sid: str) -> Record | None:
        check_session_id(sid)
        with self._transaction() as (db, sessions, _):
            query = (sessions.unique_key == sid) & live(sessions, now())
            row = (
                db(query)
                .select(
                    sessions.session_data,
                    sessions.version,
                    sessions.modified_datetime,
                    sessions.created_datetime,
                    limitby=(0, 1),
                )
                .first()
            )
        if row is None:
            return None
        data = row.session_data or b""
        if isinstance(data, str):  # pydal hands back blobs that are valid UTF-8 as str
            data = data.encode("utf-8")
        touched = row.modified_datetime or row.created_datetime
        return Record(bytes(data), row.version or 0, unix_time(touched) if touched else 0.0)

    def save(self, sid: str, data: bytes, ttl: int | None, expected: Any) -> bool:
        check_session_id(sid)
        ttl, data, at = ttl_seconds(ttl), check_payload(data), now()
        if (
            expected is not None
            and expected is not ANY
            and (isinstance(expected, bool) or not isinstance(expected, int))
        ):
            return False  # not a version this store handed out: it cannot match
        with self._transaction() as (db, sessions, _):
            values = {
                "session_data": data,
                "modified_datetime": moment(db, at),
                "expires_datetime": expiry(ttl, at),
                "locked": False,
            }
            key = sessions.unique_key == sid
            bump = sessions.version.coalesce_zero() + 1
            if expected is None:  # create, or replace a record that has expired
                expired = (sessions.expires_datetime != None) & (  # noqa: E711
                    sessions.expires_datetime <= naive_utc(at)
                )
                created = {"created_datetime": moment(db, at), **values}
                if db(key & expired).update(version=bump, **created):
                    return True
                return sql.insert_new(db, sessions, unique_key=sid, version=1, **created)
            if expected is ANY:
                for _attempt in range(5):  # each round loses only to a concurrent writer
                    if db(key).update(version=bump, **values):
                        return True
                    created = {"created_datetime": moment(db, at), **values}
                    if sql.insert_new(db, sessions, unique_key=sid, version=1, **created):
                        return True
                raise StoreUnavailable(
                    f"session database {self.masked}: concurrent writers kept replacing a "
                    "session this save had to overwrite; try again"
                )
            same = sessions.version == expected
            if expected == 0:  # web2py's rows have no version
                same |= sessions.version == None  # noqa: E711
            query = key & live(sessions, at) & same
            return db(query).update(version=expected + 1, **values) == 1

    def touch(self, sid: str, ttl: int | None) -> None:
        check_session_id(sid)
        ttl, at = ttl_seconds(ttl), now()
        with self._transaction() as (db, sessions, _):
            query = (sessions.unique_key == sid) & live(sessions, at)
            db(query).update(
                modified_datetime=moment(db, at),
                expires_datetime=expiry(ttl, at),
                version=sessions.version.coalesce_zero(),  # marks a web2py row as UTC now
            )

    def delete(self, sid: str) -> None:
        check_session_id(sid)
        with self._transaction() as (db, sessions, _):
            db(sessions.unique_key == sid).delete()

    def try_lease(self, sid: str, token: str, ttl: float) -> bool:
        """Insert the lock row, or take it over if its holder's time ran out."""
        check_session_id(sid)
        ttl, at = check_lease(token, ttl), now()
        with self._transaction() as (db, _, locks):
            if sql.insert_new(db, locks, session_id=sid, token=token, expires_at=at + ttl):
                return True
            expired = (locks.session_id == sid) & (locks.expires_at <= at)
            return db(expired).update(token=token, expires_at=at + ttl) == 1

    def release_lease(self, sid: str, token: str) -> None:
        check_session_id(sid)
        with self._transaction() as (db, _, locks):
            db((locks.session_id == sid) & (locks.token == token)).delete()

    def cleanup(
        self,
        cutoff: float,
        *,
        force: bool = False,
        dry_run: bool = False,
        batch: int = 1000,
        progress: Progress | None = None,
    ) -> CleanupStats:
        """Delete expired session rows, then expired lock rows, in short transactions.

        Each rule of ``_sql_cleanup`` is deleted through its index, ``batch`` rows in the
        first transaction; the next ones grow or shrink so that each holds its locks
        about 30 ms. SQLite has one writer at a time: each transaction takes the write
        lock first, and a 25 ms pause after it lets the app's writes in. Every transaction
        commits, also on the app's DAL with ``commit=False`` (and so commits the app's
        pending work: cleanup is meant for the cron script, which opens the store by URL).
        ``dry_run`` counts with one read-only query per table.

        ``examined`` counts the rows picked, ``deleted`` those deleted (fewer on PostgreSQL
        if a row changed meanwhile); progress is reported after each transaction that
        found rows. web2py's rows (NULL ``version``) hold local time, and the -x rule
        compares them with the cutoff in this process's local time (run it with ``TZ``
        set to the zone web2py ran in). A failure rolls back the transaction under way
        only and raises :class:`StoreUnavailable`: what is left waits for the next run.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidArgument(f"batch={batch!r} must be a whole number of 1 or more")
        at, stats, locks_gone = now(), CleanupStats(), 0
        db, sessions, locks = self._tables()
        session_rules = _sql_cleanup.session_rules(sessions, at, cutoff, force)
        lock_rules = _sql_cleanup.lock_rules(locks, at)
        sqlite = db._adapter.dbengine == "sqlite"
        size = min(batch, _sql_cleanup.MAX_ROWS)
        try:
            if dry_run:  # one read-only count per table
                stats.examined = stats.deleted = _sql_cleanup.count(db, session_rules)
                locks_gone = _sql_cleanup.count(db, lock_rules)
                db.commit()
                if stats.examined and progress is not None:
                    progress(dataclasses.replace(stats))
            for rule in [] if dry_run else session_rules + lock_rules:
                while True:
                    if sqlite:  # take the write lock before timing
                        sql.begin_immediate(db)
                    started = time.monotonic()
                    picked, gone = _sql_cleanup.delete(db, rule, size)
                    elapsed = time.monotonic() - started  # the rows' share, not the commit's
                    db.commit()
                    if rule.kind == "lock":
                        locks_gone += gone
                    elif picked:
                        stats.examined += picked
                        stats.deleted += gone
                        if progress is not None:
                            progress(dataclasses.replace(stats))
                    if picked < size:
                        break
                    size = _sql_cleanup.next_size(size, elapsed)
                    if sqlite:
                        time.sleep(_sql_cleanup.SQLITE_PAUSE)
        except db._adapter.driver.Error as exc:
            self._rollback(db)
            raise self._unavailable(exc) from exc
        except BaseException:
            self._rollback(db)
            raise
        if locks_gone:
            verb = "would remove" if dry_run else "removed"
            stats.note = f"{verb} {locks_gone} expired lock row(s)"
        return stats

    def close(self) -> None:
        """Close this thread's connection; other threads reopen theirs on next use.

        On the app's DAL this does nothing: the connection belongs to the app.
        """
        if self._db is None:
            self._dals.close()

    # -- connections --------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[tuple[DAL, Table, Table]]:
        """The DAL and tables to use; commits after the block if the store commits, and
        turns driver errors into :class:`StoreUnavailable`."""
        db, sessions, locks = self._tables()
        try:
            yield db, sessions, locks
            if self.commit:
                db.commit()
        except db._adapter.driver.Error as exc:
            if self.commit:
                self._rollback(db)
            raise self._unavailable(exc) from exc
        except BaseException:
            if self.commit:
                self._rollback(db)
            raise

    def _tables(self) -> tuple[DAL, Table, Table]:
        return self._app_tables if self._db is not None else self._dals.get()

    def _connect(self) -> DAL:
        """A new DAL for this thread: one attempt, short timeout, errors as
        :class:`StoreUnavailable`."""
        try:
            where = f"session database {self.masked}"
            return sql.open_dal(self._dal_options, where, create=self.create)
        except RuntimeError as exc:  # pydal's "Failure to connect, tried 1 times"
            fix = "check that the server is running and the URL's host, port, user and database"
            raise self._unavailable(exc, fix) from None

    def _prepare(self, db: DAL) -> tuple[DAL, Table, Table]:
        """``db`` with the store's tables defined (made or upgraded first if need be)."""
        try:
            if not self.create:
                sql.require_table(db, self.table, f"session database {self.masked}")
            sessions, locks = session_tables(
                db, self.table, self.lock_table, migrate=self.migrate, where=self.masked
            )
        except db._adapter.driver.Error as exc:
            raise self._unavailable(exc) from exc
        return db, sessions, locks

    def _unavailable(self, exc: BaseException, fix: str = "") -> StoreUnavailable:
        reason = sql.failure_reason(exc, self._password)
        fix = fix or (
            f"check that the database is reachable and that table {self.table} is usable "
            "(migrate=true creates and upgrades it)"
        )
        return StoreUnavailable(f"session database {self.masked}: {reason}; {fix}")

    def _rollback(self, db: DAL) -> None:
        try:
            db.rollback()
        except Exception:  # noqa: BLE001 - the connection is gone: reopen on next use
            if self._db is None:
                self._dals.drop()

    @staticmethod
    def _check_engine(db: DAL) -> None:
        engine = db._adapter.dbengine
        if engine not in _ENGINES:
            raise ConfigError(
                f"DatabaseStore runs on {', '.join(_ENGINES)}; the app's DAL is {engine}"
            )
