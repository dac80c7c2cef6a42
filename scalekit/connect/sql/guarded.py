"""A DAL used with its failures told plainly: what each piece that keeps rows in SQL does
around its connections, once.

- :func:`connect`: :func:`~scalekit.connect.sql.dal.open_dal`, a server it cannot reach
  (pydal's ``RuntimeError``) raised as the caller's error.
- :func:`session_defaults`: a new connection readied for short transactions (SQLite's WAL
  mode; MySQL/MariaDB's isolation and lock waits).
- :func:`opened`: a DAL of its own on an existing database named by URL, for one command
  (nothing created), closed after.
- :func:`unavailable`: a driver failure as :class:`StoreUnavailable`, without the password.

A transaction on a thread's DAL is :meth:`ThreadDAL.transaction
<scalekit.connect.sql.connections.ThreadDAL.transaction>`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from pydal import DAL

from scalekit.connect.sql.dal import close_quietly, dal_options, failure_reason, open_dal, wal_mode
from scalekit.core import urls
from scalekit.core.errors import StoreUnavailable

#: What :func:`unavailable` suggests unless told otherwise.
CHECK_SERVER = "check that the server is running"


def unavailable(
    where: str, exc: BaseException, password: str | None, fix: str = CHECK_SERVER
) -> StoreUnavailable:
    """:class:`StoreUnavailable` saying ``where`` failed, why (one line, the password
    masked) and ``fix``."""
    return StoreUnavailable(f"{where}: {failure_reason(exc, password)}; {fix}")


def connect(
    options: dict[str, Any],
    where: str,
    *,
    create: bool,
    unavailable: Callable[[BaseException], BaseException],
) -> DAL:
    """:func:`open_dal`; a server it cannot reach (pydal's "Failure to connect, tried 1
    times") is ``unavailable(exc)``, raised without pydal's chained traceback."""
    try:
        return open_dal(options, where, create=create)
    except RuntimeError as exc:
        raise unavailable(exc) from None


def session_defaults(db: DAL, statement_timeout: float, *, wal: bool) -> None:
    """Ready a new connection for short transactions. SQLite: WAL mode when ``wal`` (only a
    caller that may change the file asks), so readers never wait for the writer.
    MySQL/MariaDB: READ COMMITTED (no gap locks) and a row or table lock waited for no
    longer than a statement may run (``statement_timeout`` seconds, at least 1)."""
    engine = db._adapter.dbengine
    if engine == "sqlite" and wal:
        wal_mode(db)
    elif engine == "mysql":
        wait = max(1, round(statement_timeout))
        db.executesql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED;")
        db.executesql(f"SET SESSION innodb_lock_wait_timeout = {wait}, lock_wait_timeout = {wait};")


@contextlib.contextmanager
def opened(url: str, what: str = "database") -> Iterator[DAL]:
    """A DAL of its own on the existing database at ``url`` (``sqlite://``, ``postgres://``,
    ``mysql://``; nothing created), closed after the block. Failing to connect, or a driver
    error in the block, is :class:`StoreUnavailable` naming ``what`` and the masked URL."""
    settings = urls.parse(url, kinds={"database", "sqlite"})
    where = f"{what} {settings.masked}"
    password = getattr(settings, "password", None)
    options = dal_options(settings, folder=None, timeout=None)
    db = connect(
        options, where, create=False, unavailable=lambda exc: unavailable(where, exc, password)
    )
    try:
        yield db
    except db._adapter.driver.Error as exc:
        raise unavailable(where, exc, password) from exc
    finally:
        close_quietly(db)
