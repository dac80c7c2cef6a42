"""One database of a replica set: its URL, how to reach it quickly, how far behind it is.

Its URI, connect timeout, per-process pools and failure reasons come from
:mod:`scalekit.connect.sql`; the lag queries are this module's own.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydal import DAL

from scalekit.connect.sql import (
    bound_args,
    close,
    connect_timeout_args,
    failure_reason,
    pool_per_process,
    positive_timeout,
    server_uri,
)
from scalekit.core.options import merge_options
from scalekit.core.urls import DatabaseURL, SQLiteURL, parse

__all__ = ["Lag", "Member", "close"]

#: Seconds a PostgreSQL replica is behind: 0 when it has replayed all it received, else
#: the age of the last transaction it replayed (NULL: none yet, so unknown).
_PG_LAG = (
    "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END;"
)
#: A MySQL/MariaDB replica's status: MySQL 8.0.22+ and MariaDB 10.5+, then older servers.
_MYSQL_STATUS = ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS")
_MYSQL_PARSE_ERROR, _MYSQL_ACCESS_DENIED = 1064, 1227


class Lag(NamedTuple):
    """How far behind its primary a replica is: ``seconds``, or None and ``why`` not."""

    seconds: float | None
    why: str = ""


#: The default bound on the app's own statements: longer than the stores' (which run one
#: small statement each), so reports and migrations have room; set it per URL.
APP_STATEMENT_TIMEOUT = 30.0


class Member:
    """A primary or replica given by URL (``postgres://``, ``mysql://``, ``sqlite://``).

    The URL may set ``?connect_timeout=<seconds>``; it overrides the set's default; and
    ``?statement_timeout=<seconds>`` (default :data:`APP_STATEMENT_TIMEOUT`, 30), the bound on
    each of the app's statements even when the server is frozen
    (:func:`~scalekit.connect.sql.bound_args`).
    """

    def __init__(self, url: str, connect_timeout: float):
        settings = parse(url, kinds={"database", "sqlite"})
        spec = {"connect_timeout": float, "statement_timeout": float}
        options = merge_options(settings, spec, {})
        self.settings = settings
        self.url = url
        self.masked = settings.masked
        self.timeout = positive_timeout(settings, options.get("connect_timeout", connect_timeout))
        self.decode_credentials = False
        self.driver_args: dict[str, Any]
        if isinstance(settings, SQLiteURL):
            self.uri, self.driver_args = settings.dal_uri, {}
        elif isinstance(settings, DatabaseURL):
            self.uri, self.decode_credentials = server_uri(settings)
            self.driver_args = {
                **connect_timeout_args(settings, self.timeout),
                **bound_args(settings, options.get("statement_timeout", APP_STATEMENT_TIMEOUT)),
            }
        else:  # parse() was limited to these kinds
            raise TypeError(f"{settings!r} is not a database URL")

    def __repr__(self) -> str:
        return f"<Member {self.masked}>"

    def probe(self) -> None:
        """Open and close one connection with the driver (raises on failure).

        pydal sleeps a second after a failed attempt, even with ``attempts=1``: a host we
        have not seen work is checked this way first, so its failure costs one connect
        timeout and nothing more.
        """
        settings = self.settings
        if not isinstance(settings, DatabaseURL):
            return
        common = {"host": settings.host, "port": settings.port, "user": settings.user}
        if settings.password is not None:
            common["password"] = settings.password
        if settings.dialect == "postgres":
            import psycopg2

            connection = psycopg2.connect(dbname=settings.database, **self.driver_args, **common)
        else:
            import pymysql

            connection = pymysql.connect(database=settings.database, **self.driver_args, **common)
        connection.close()

    def connect(self, options: dict[str, Any]) -> DAL:
        """A pydal DAL on this database: one attempt, this member's connect timeout."""
        options = dict(options)
        options["driver_args"] = {**(options.get("driver_args") or {}), **self.driver_args}
        options.update(attempts=1, decode_credentials=self.decode_credentials)
        if options.get("pool_size"):
            pool_per_process(self.uri)
        return DAL(self.uri, **options)

    def lag(self, db: DAL) -> Lag:
        """How far behind its primary this replica is: PostgreSQL from its replay position,
        MySQL/MariaDB from its replication status (the user needs ``SLAVE MONITOR`` on
        MariaDB, ``REPLICATION CLIENT`` on MySQL); 0 for SQLite."""
        engine = db._adapter.dbengine
        if engine == "postgres":
            (value,) = db.executesql(_PG_LAG)[0]
            if value is None:
                return Lag(None, "it has replayed no transaction to measure by")
            return Lag(float(value))
        if engine == "mysql":
            return _mysql_lag(db, self.settings)
        return Lag(0.0)

    def reason(self, exc: BaseException) -> str:
        """One line saying why a connect failed, without the password."""
        return failure_reason(exc, getattr(self.settings, "password", None))


def _mysql_lag(db: DAL, settings: DatabaseURL) -> Lag:
    """The largest ``Seconds_Behind_Source`` (``_Master``) over the replica's channels; 0 on
    a server that replicates from nobody."""
    for statement in _MYSQL_STATUS:
        try:
            rows = db.executesql(statement, as_dict=True)
            break
        except db._adapter.driver.Error as exc:
            code = exc.args[0] if exc.args else None
            if code == _MYSQL_PARSE_ERROR and statement != _MYSQL_STATUS[-1]:
                continue
            if code == _MYSQL_ACCESS_DENIED:
                return Lag(
                    None,
                    f"user {settings.user!r} may not read the replication status: grant it "
                    "SLAVE MONITOR (MariaDB) or REPLICATION CLIENT (MySQL) ON *.*",
                )
            raise
    seconds = []
    for row in rows:
        behind = row.get("Seconds_Behind_Source", row.get("Seconds_Behind_Master"))
        if behind is None:
            return Lag(None, f"replication is not running ({_threads(row)})")
        seconds.append(float(behind))
    return Lag(max(seconds, default=0.0))


def _threads(status: dict[str, Any]) -> str:
    """``IO thread Yes, SQL thread No`` from a replica status row (either vocabulary)."""
    states = []
    for thread in ("IO", "SQL"):
        running = status.get(f"Replica_{thread}_Running", status.get(f"Slave_{thread}_Running"))
        states.append(f"{thread} thread {running}")
    return ", ".join(states)
