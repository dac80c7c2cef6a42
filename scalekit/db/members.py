"""One database of a replica set: its URL, how to reach it quickly, how far behind it is."""

from __future__ import annotations

import contextlib
import math
import os
import re
from typing import Any

from pydal import DAL
from pydal.connection import ConnectionPool

from scalekit._sql import server_uri
from scalekit.errors import ConfigError
from scalekit.urls import DatabaseURL, SQLiteURL, parse

_RAISED = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): (.+)$", re.MULTILINE)

#: Seconds a PostgreSQL replica is behind: 0 when it has replayed all it received, else
#: the age of the last transaction it replayed (NULL: none yet, so unknown).
_PG_LAG = (
    "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END;"
)

#: URIs whose pydal connection pools we fill; a forked child must not reuse the parent's.
_pooled_uris: set[str] = set()
_inherited_pools: list[Any] = []


def _forget_pools_in_child() -> None:
    """Hide the parent's pooled connections from a forked child (kept referenced, never
    closed, so the parent's server sessions stay intact)."""
    for uri in _pooled_uris:
        inherited = ConnectionPool.POOLS.pop(uri, None)
        if inherited:
            _inherited_pools.append(inherited)


os.register_at_fork(after_in_child=_forget_pools_in_child)


class Member:
    """A primary or replica given by URL (``postgres://``, ``mysql://``, ``sqlite://``).

    The URL may set ``?connect_timeout=<seconds>``; it overrides the set's default.
    """

    def __init__(self, url: str, connect_timeout: float):
        settings = parse(url, kinds={"database", "sqlite"})
        settings.check_options({"connect_timeout"})
        self.settings = settings
        self.url = url
        self.masked = settings.masked
        self.timeout = settings.option("connect_timeout", connect_timeout, float)
        if not self.timeout > 0:
            raise ConfigError(f"{self.masked}: connect_timeout must be positive")
        self.decode_credentials = False
        if isinstance(settings, SQLiteURL):
            self.uri, self.driver_args = settings.dal_uri, {}
        elif isinstance(settings, DatabaseURL):
            self.uri, self.decode_credentials = server_uri(settings)
            # libpq takes whole seconds; pymysql takes a float
            seconds = math.ceil(self.timeout) if settings.dialect == "postgres" else self.timeout
            self.driver_args = {"connect_timeout": seconds}
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

            connection = psycopg2.connect(
                dbname=settings.database, connect_timeout=self.driver_args["connect_timeout"],
                **common,
            )  # fmt: skip
        else:
            import pymysql

            connection = pymysql.connect(
                database=settings.database, connect_timeout=self.timeout, **common
            )
        connection.close()

    def connect(self, options: dict[str, Any]) -> DAL:
        """A pydal DAL on this database: one attempt, this member's connect timeout."""
        options = dict(options)
        options["driver_args"] = {**(options.get("driver_args") or {}), **self.driver_args}
        options.update(attempts=1, decode_credentials=self.decode_credentials)
        if options.get("pool_size"):
            _pooled_uris.add(self.uri)
        return DAL(self.uri, **options)

    def lag(self, db: DAL) -> float | None:
        """Seconds this replica is behind its primary (None: unknown); PostgreSQL only,
        0 elsewhere."""
        if db._adapter.dbengine != "postgres":
            return 0.0
        (value,) = db.executesql(_PG_LAG)[0]
        return None if value is None else float(value)

    def reason(self, exc: BaseException) -> str:
        """One line saying why a connect failed, without the password."""
        text = str(exc)
        raised = _RAISED.findall(text)  # pydal's connect error quotes the driver's traceback
        lines = raised[-1:] or [line.strip() for line in text.splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        password = getattr(self.settings, "password", None)
        return reason.replace(password, "***") if password else reason


def close(db: DAL, action: str | None = None) -> None:
    """Commit or roll back (``action``), then give the connection back to the pool (or
    close it) and unregister the DAL; a connection that fails ``action`` is dropped."""
    try:
        db._adapter.close(action=action)
    finally:
        with contextlib.suppress(Exception):  # already closed: nothing left to release
            db.close()
